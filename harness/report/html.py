"""``OUT/report.html``: the markdown report as one self-contained page (opens offline: no CDN, no external file).

- text and tables: ``report.md`` rendered by Python-Markdown (tables, ``<details>``); every table gets a filter box
  and sortable columns (a few lines of inline JavaScript); verdict cells are coloured (holds / does not hold / not
  measurable here);
- plots: each ``plots/X.png`` with a data file ``plots/X.json`` (written beside it by ``harness.report.plots``) is
  redrawn with plotly (log-log axes, a value on hover, series toggled from the legend); plotly.js is inlined once.
  Plotly because it is maintained, draws log axes and hover out of the box, and its whole library inlines in one
  script tag (about 4.6 MB), which keeps the page a single file; itables would add jQuery/DataTables for what 30
  lines of JS do here. A PNG without a data file is embedded as base64.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

VERDICTS = {"holds": "v-holds", "does not hold": "v-fails", "not measurable here": "v-na"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 1.5rem;
     color:#222;line-height:1.45}
table{border-collapse:collapse;font-size:.82rem;margin:.3rem 0 1rem;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:.2rem .45rem;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;position:sticky;top:0;user-select:none}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
tr:nth-child(even) td{background:#fafafa}
td.v-holds{background:#d7f5dd!important;color:#0b5d1e} td.v-fails{background:#fbdcdc!important;color:#8a1212}
td.v-na{background:#eeeeee!important;color:#666}
input.filter{margin:.4rem 0 .1rem;padding:.2rem .4rem;width:18rem;font-size:.8rem}
code{background:#f3f3f3;padding:0 .2rem;border-radius:3px} img{max-width:100%}
.plot{width:100%;margin:.5rem 0 1.5rem}
"""

JS = """
function cellValue(td){const t=td.textContent.trim();const n=parseFloat(t.replace(/[^0-9eE+.\\-]/g,''));
  return (t!==''&&!isNaN(n)&&/^[\\s\\-+]?[0-9.]/.test(t))?n:t.toLowerCase();}
document.querySelectorAll('table').forEach((table,ti)=>{
  const body=table.tBodies[0]; if(!body) return;
  const input=document.createElement('input'); input.className='filter'; input.placeholder='filter rows...';
  input.setAttribute('aria-label','filter table '+(ti+1));
  table.parentNode.insertBefore(input,table);
  input.addEventListener('input',()=>{const q=input.value.toLowerCase();
    for(const tr of body.rows){tr.style.display=tr.textContent.toLowerCase().includes(q)?'':'none';}});
  table.querySelectorAll('th').forEach((th,ci)=>th.addEventListener('click',()=>{
    const asc=!th.classList.contains('asc');
    table.querySelectorAll('th').forEach(h=>h.classList.remove('asc','desc'));
    th.classList.add(asc?'asc':'desc');
    const rows=[...body.rows].sort((a,b)=>{const x=cellValue(a.cells[ci]),y=cellValue(b.cells[ci]);
      if(typeof x===typeof y) return (x<y?-1:x>y?1:0)*(asc?1:-1); return (typeof x==='number'?-1:1)*(asc?1:-1);});
    rows.forEach(r=>body.appendChild(r));}));
});
"""


def _figure(data: dict, div_id: str) -> str:
    """A plotly figure (as a div and its script) of a plot's data file: one subplot per panel."""
    from plotly.subplots import make_subplots

    panels = data["panels"]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p["title"] for p in panels])
    shown: set[str] = set()
    for i, p in enumerate(panels, start=1):
        for s in p["series"]:
            fit = s["kind"] == "fit"
            group = s["name"].split(" fit:")[0]
            fig.add_scatter(x=s["x"], y=s["y"], name=s["name"] if fit else group, legendgroup=group,
                            showlegend=not fit and group not in shown, mode="lines" if fit else "lines+markers",
                            line={"color": s["color"], "dash": s["dash"], "width": 1 if fit else 1.6},
                            marker={"symbol": s["symbol"], "size": 7}, opacity=0.55 if fit else 0.95,
                            hovertemplate=f"<b>{html.escape(s['name'])}</b><br>{p['xlabel']}=%{{x}}<br>"
                                          f"{p['ylabel']}=%{{y:.4g}}<extra></extra>", row=1, col=i)
            shown.add(group)
        fig.update_xaxes(type="log" if p["logx"] else "linear", title_text=p["xlabel"], row=1, col=i)
        fig.update_yaxes(type="log" if p["logy"] else "linear", title_text=p["ylabel"], row=1, col=i)
    fig.update_layout(title=data["title"], height=460, template="plotly_white", margin={"t": 70},
                      legend={"font": {"size": 11}})
    return fig.to_html(full_html=False, include_plotlyjs=False, default_height="460px", div_id=div_id)


def _plots(body: str, out: Path) -> str:
    """Replace each ``<img src="plots/X.png">`` with the interactive figure of ``plots/X.json`` (or the PNG inlined)."""
    def replace(m: re.Match) -> str:
        png = out / html.unescape(m.group(1))
        data = png.with_suffix(".json")
        if data.exists():
            return f'<div class="plot" data-plot="{html.escape(png.name)}">{_figure(json.loads(data.read_text()), "plot-" + re.sub(r"[^A-Za-z0-9_-]", "_", png.stem))}</div>'
        if png.exists():
            return f'<img alt="{html.escape(png.name)}" src="data:image/png;base64,' \
                   f'{base64.b64encode(png.read_bytes()).decode()}">'
        return m.group(0)
    return re.sub(r'<img alt="[^"]*" src="([^"]+\.png)"\s*/?>', replace, body)


def _verdicts(body: str) -> str:
    """A verdict cell gets its colour class (the alignment style Markdown adds is dropped)."""
    for text, cls in VERDICTS.items():
        body = re.sub(rf"<td(?: style=\"[^\"]*\")?>{text}</td>", f'<td class="{cls}">{text}</td>', body)
    return body


def render(markdown_text: str, out: Path, title: str) -> str:
    import markdown
    import plotly.offline

    body = markdown.markdown(markdown_text, extensions=["tables", "md_in_html"])
    body = _verdicts(_plots(body, out))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>"
            f"<script>{plotly.offline.get_plotlyjs()}</script></head>\n<body>\n{body}\n<script>{JS}</script>"
            "</body></html>\n")


def write_html(out: Path, markdown_text: str, title: str) -> Path:
    path = out / "report.html"
    path.write_text(render(markdown_text, out, title))
    return path
