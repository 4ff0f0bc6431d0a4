"""Every default rule ships with promtool-style tests; the suite runs them all."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from rules.engine import load_rules
from streams.cli.main import main
from streams.config import load_yaml
from streams.sim.rule_tests import RuleTestFile, run_file

TEST_DIR = Path(__file__).resolve().parents[2] / "rules" / "tests"
FILES = sorted(TEST_DIR.glob("*_test.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_rule_test_file_passes(path: Path):
    results = run_file(path)
    failures = [f"{r.name}: {r.problems} (seen {r.alerts})" for r in results if not r.passed]
    assert not failures, "\n".join(failures)


def test_every_default_rule_has_a_test_that_makes_it_fire():
    fired = set()
    for path in FILES:
        for t in load_yaml(path, RuleTestFile).tests:
            fired |= {e.rule for e in t.expect if e.status == "firing"}
    assert {r.id for r in load_rules().rules} <= fired


def test_rules_test_cli_reports_failures(tmp_path: Path):
    f = tmp_path / "t_test.yaml"
    f.write_text(
        f"rule_files: [{TEST_DIR.parent / 'default'}]\n"
        "tests:\n"
        "  - name: wrong expectation\n"
        "    events: [{at: 0d, type: nps, user_id: u, score: 2}]\n"
        "    rules: [nps_detractor]\n"
        "    expect: [{rule: nps_detractor, status: firing, at: 1d}]\n"
    )
    result = CliRunner().invoke(main, ["rules", "test", str(f)])
    assert result.exit_code == 1
    assert "expected nps_detractor firing at 1d: not seen" in result.output
    assert "unexpected nps_detractor firing at 0" in result.output
    assert "rules: 0 passed, 1 failed" in result.output
