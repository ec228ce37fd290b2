"""The demo's OneDrive source (examples/aiq_sync.yaml `od-demo`) with the Graph sandbox that
`make demo` starts for it: every generated good line lands once, through real Graph calls."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from aiq_sync import warehouse
from aiq_sync.config import load_config
from assets.runner import run_sync
from examples import demo
from examples.generate_drops import DropSpec, generate

EXAMPLES = Path(demo.__file__).resolve().parent


@pytest.mark.e2e
def test_demo_onedrive_source_lands_every_good_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in demo.DEMO_SECRETS.items():
        monkeypatch.setenv(name, value)
    text = (EXAMPLES / "aiq_sync.yaml").read_text(encoding="utf-8")
    config = load_config(_write(tmp_path, text))
    (source,) = [s for s in config.sources if s.name == "od-demo"]
    sandbox = demo._onedrive_sandbox(source, port=0)  # a free port, not the demo's 18767
    with sandbox:
        # The demo config with only its OneDrive source, pointed at this sandbox.
        only_od = "  #" + text.split("\n  # Daily drops in a OneDrive")[1]
        head = re.sub(r'(drops|bc-demo|wj-demo): "\d+", ', "", text.split("\nsources:")[0])
        only_od = only_od.replace("http://127.0.0.1:18767/", sandbox.base_url)
        config = load_config(_write(tmp_path, f"{head}\nsources:\n{only_od}"))
        assert [s.name for s in config.sources] == ["od-demo"]
        first = run_sync(config, instance=dg.DagsterInstance.ephemeral(), out=lambda _: None)
        again = run_sync(config, instance=dg.DagsterInstance.ephemeral(), out=lambda _: None)
    assert first.ok and again.ok

    with tempfile.TemporaryDirectory() as tmp:
        truth = generate(Path(tmp), DropSpec(**demo.ONEDRIVE_DROPS))
    with warehouse.open_warehouse(config.warehouse_path, read_only=True) as con:
        items, sales, bad, unmapped = con.execute(
            "SELECT (SELECT count(*) FROM core.sale_items), (SELECT count(*) FROM core.sales), "
            "(SELECT count(*) FROM ops.quarantine WHERE source = 'od-demo'), "
            "(SELECT list(location_key) FROM ops.unmapped_locations WHERE source = 'od-demo')"
        ).fetchone()
    assert (items, sales, bad) == (truth.good_lines, truth.transactions, len(truth.bad_lines))
    assert unmapped == ["99"]  # the pop-up kiosk the demo leaves unmapped on purpose


def _write(folder: Path, text: str) -> Path:
    path = folder / "aiq_sync.yaml"
    path.write_text(re.sub(r"\.\./data/", "data/", text), encoding="utf-8")
    return path
