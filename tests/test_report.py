"""``nni-bio report``: Markdown tables and an accuracy-vs-eps PNG over run folders."""

import json

import pytest

from nni_bio.cli import main
from nni_bio.core.errors import NniBioError
from nni_bio.evaluate.run_report import write_report


def fake_run(folder, name, rule, clean, drops):
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps({
        "status": "complete", "description": f"tiny-cnn[{rule}]", "dataset": "digits",
        "final": {"epoch": 3, "test_acc": clean}, "best_val": {"epoch": 2, "val_acc": clean - 0.01},
        "setup": {"config": {"epochs": 3}}}))
    rows = []
    for attack, views in (("fgsm", ("rule", "bp")), ("pgd", ("rule", "bp")), ("square", ("none",))):
        for view in views:
            for k, eps in enumerate((0.0, 2 / 255, 8 / 255)):
                adv = clean - k * drops[view]
                rows.append({"attack": attack, "gradient": view, "eps": eps, "clean_acc": clean, "adv_acc": adv,
                             "robust_acc": adv, "num_images": 100, "params": {"steps": 10} if attack == "pgd" else {}})
    (folder / "attack.json").write_text(json.dumps({"name": name, "dataset": "digits", "rows": rows}))
    return folder


def test_report_writes_markdown_tables_and_a_png(tmp_path):
    a = fake_run(tmp_path / "usf-run", "usf-run", "usf", 0.95, {"rule": 0.1, "bp": 0.3, "none": 0.05})
    b = fake_run(tmp_path / "bp-run", "bp-run", "backprop", 0.97, {"rule": 0.35, "bp": 0.35, "none": 0.05})
    md, png = write_report([a, b], tmp_path / "out", title="digits robustness")
    text = md.read_text()
    assert "| usf-run | tiny-cnn[usf] | digits | 0.9500 | 0.9400 (2) | 3 | complete |" in text
    assert "### FGSM" in text and "### PGD" in text and "### Square" in text
    assert "| usf-run | bp (exact-gradient view) | 100 | 0.9500 | 0.9500 | 0.6500 | 0.3500 |" in text
    assert "![accuracy vs eps](report.png)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_report_cli_and_runs_without_attacks(tmp_path, capsys):
    run = tmp_path / "only-trained"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"status": "running", "description": "lenet[fa]", "dataset": "digits"}))
    assert main(["report", str(run), "--output", str(tmp_path / "out")]) == 0
    assert "| only-trained | lenet[fa] | digits |" in capsys.readouterr().out
    assert not (tmp_path / "out" / "report.png").exists()
    with pytest.raises(NniBioError, match="neither result.json nor attack.json"):
        write_report([tmp_path / "missing"], tmp_path / "out")
