"""The plots' encoding: colour = family, marker/line style = mixer within the family, so that no two mixers of the
registry share an encoding in one panel, and the legend sits outside the axes."""
import pandas as pd

import architectures
from harness.report.plots import scaling_plot, styles


def _specs():
    return {n: architectures.get_mixer(n).spec.as_dict() for n in architectures.list_mixers() if n[0] != "_"}


def test_every_registered_mixer_has_its_own_encoding():
    specs = _specs()
    rows = pd.DataFrame({"mixer": list(specs), "mixer_name": list(specs)})
    style = styles(rows, specs)
    keys = [(tuple(s["color"]), s["marker"], s["linestyle"]) for s in style.values()]
    assert len(set(keys)) == len(keys) == len(specs)
    for m, s in style.items():  # one colour per family
        same = {tuple(style[o]["color"]) for o in style if style[o]["family"] == s["family"]}
        assert same == {tuple(s["color"])}


def test_the_legend_is_outside_the_panels(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    specs = _specs()
    rows = pd.DataFrame([{"mixer": m, "mixer_name": m, "mode": "forward", "seq_len": n, "metric": "time_s",
                          "status": "ok", "value": 1e-3 * n} for m in list(specs)[:8] for n in (256, 512, 1024)])
    saved = {}
    monkeypatch.setattr(plt, "close", lambda fig: saved.setdefault("fig", fig))
    assert scaling_plot(rows, pd.DataFrame(), "time_s", ["forward"], tmp_path / "p.png", "t", specs)
    fig = saved["fig"]
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent())
