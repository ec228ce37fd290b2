"""`aiq-sync bench` at a tiny scale: what a user checks in bench/results.json and the table.

Real processes throughout: two sandbox servers, the floor and two `aiq-sync run`s, each in
its own process. No timing is asserted (speed belongs to the benchmark itself)."""

import json

import pytest

from aiq_sync.cli import main as cli

pytestmark = pytest.mark.timeout(300)


def test_bench_tiny_scale_writes_results_and_table(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["--scale", "0.005", "--history-days", "30", "--skip-peer", "--skip-quota"]
    code = cli(["bench", *args, "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    contenders = results["contenders"]
    assert set(contenders) == {"floor", "aiq_full", "aiq_nightly", "dlt"}
    assert contenders["dlt"]["status"] == "not run: --skip-peer"
    assert results["quota"]["status"] == "not run: --skip-quota"

    held = results["holdings"]
    bc, wj = held["bc"], held["wj"]
    assert bc["orders"] == 1_000 and bc["items"] > bc["orders"]
    for name in ("floor", "aiq_full"):
        c = contenders[name]
        assert c["status"] == "ok", c
        assert c["requests"] > 0 and c["wall_s"] > 0 and c["peak_rss_mb"] > 0
        # Every BigCommerce order, line item and customer the sandbox holds, and every
        # Webjoint order (the tiny data set has no malformed one).
        assert c["rows_by_source"]["bc"] == bc
        assert c["rows_by_source"]["wj"]["orders"] == wj["orders"]
        assert c["rows_by_source"]["wj"]["items"] == wj["items"]
    assert contenders["floor"]["ratio_to_floor"] == 1.0
    assert contenders["aiq_full"]["ratio_to_floor"] > 0

    # The next night: 1 % of orders and customers were modified; the nightly run lands them
    # (plus the look-back day), far fewer than the full run, with fewer requests.
    nightly, full = contenders["aiq_nightly"], contenders["aiq_full"]
    modified = results["nightly_modified"]["bc"]
    assert nightly["status"] == "ok", nightly
    assert modified["orders"] == 10
    assert modified["customers"] == round(results["sizes"]["bc_customers"] * 0.01)
    assert modified["orders"] <= nightly["rows_by_source"]["bc"]["orders"] < bc["orders"] // 2
    assert nightly["rows_by_source"]["bc"]["customers"] >= modified["customers"]
    assert 0 < nightly["requests"] < full["requests"]

    table = (out / "results.md").read_text()
    assert "| aiq-sync full |" in table and "| floor |" in table
    assert "| dlt | not run: --skip-peer |" in table
    assert table in capsys.readouterr().out
