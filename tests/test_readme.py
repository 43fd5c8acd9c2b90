"""README starts with the two commands, and .ci/run runs README's test command."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def test_readme_opens_with_two_commands():
    assert (ROOT / "README.md").read_text().lstrip().startswith("# lingrid")
    cmds = readme_commands()
    assert len(cmds) == 2, cmds


def test_ci_runs_readme_test_command():
    test_cmd = readme_commands()[1].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci], (test_cmd, ci)
