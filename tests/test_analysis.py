import numpy as np
import pandas as pd
import pytest

from harness.analysis import crossovers, fit_exponent, scaling_fits, state_ratios, verdict


@pytest.mark.parametrize("exponent", [0.0, 1.0, 1.5, 2.0])
def test_fit_recovers_a_power_law(exponent):
    n = np.array([256, 512, 1024, 2048, 4096])
    fit = fit_exponent(n, 3e-6 * n**exponent)
    assert fit.exponent == pytest.approx(exponent, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.stderr == pytest.approx(0.0, abs=1e-9)


def test_fit_reports_noise():
    rng = np.random.default_rng(0)
    n = np.array([512, 1024, 2048, 4096, 8192])
    fit = fit_exponent(n, n**2 * np.exp(rng.normal(0, 0.2, size=5)))
    assert abs(fit.exponent - 2) < 0.3 and fit.stderr > 0.01 and fit.r2 < 1


def test_fit_needs_two_lengths():
    assert fit_exponent(np.array([128]), np.array([1.0])) is None


def test_verdicts():
    assert verdict(2.2, 2, 0.25) == "holds"
    assert verdict(1.5, 2, 0.25) == "does not hold"
    assert verdict(None, 2, 0.25) == "not measurable here"
    assert verdict(1.0, None, 0.25) == "no claim"


def rows(mixer, metric, mode, values, name=None):
    return [{"benchmark": "s", "mixer": mixer, "mixer_name": name or mixer, "impl": "torch", "mode": mode,
             "batch": 1, "d_model": 8, "n_heads": 2, "dtype": "float32", "seed": 0, "seq_len": n, "metric": metric,
             "value": v, "status": "ok"} for n, v in values.items()]


def test_scaling_fits_use_the_longest_points_and_the_claim():
    # quadratic only from n=1024 on: the fit over the last 3 points must see 2
    values = {128: 1.0, 256: 1.1, 512: 1.2, 1024: 4.0, 2048: 16.0, 4096: 64.0}
    df = pd.DataFrame(rows("standard", "time_s", "forward", values))
    specs = {"standard": {"time_exponent": 2, "claimed_time": "O(n^2 d)"}}
    fits = scaling_fits(df, specs, {"s": {"last_points": 3, "tolerance": 0.25}})
    r = fits.iloc[0]
    assert r["exponent"] == pytest.approx(2.0) and r["verdict"] == "holds" and r["n_range"] == "1024-4096"


def test_crossover():
    df = pd.DataFrame(rows("flash", "time_s", "forward", {256: 1.0, 512: 3.0, 1024: 10.0, 2048: 40.0})
                      + rows("linear", "time_s", "forward", {256: 2.0, 512: 4.0, 1024: 8.0, 2048: 16.0})
                      + rows("slow", "time_s", "forward", {256: 9.0, 512: 9.0, 1024: 90.0, 2048: 900.0}))
    c = crossovers(df, {"s": ["flash"]}).set_index("mixer")
    assert c.loc["linear", "crossover_n"] == 1024
    assert c.loc["linear", "speedup_at_longest"] == pytest.approx(2.5)
    assert c.loc["slow", "crossover"].startswith("not within sweep")


def test_state_ratio():
    df = pd.DataFrame(rows("standard", "state_bytes", "decode", {64: 1000}) +
                      rows("gqa", "state_bytes", "decode", {64: 250}))
    r = state_ratios(df).set_index("mixer")
    assert r.loc["gqa", "ratio_to_standard"] == 0.25
