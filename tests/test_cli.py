"""The command line's help and its errors for a misspelt command, method, suite or model: each names what is known and
the closest match, before Hydra composes anything (no run folder, no model loaded)."""

import subprocess
import sys

import pytest

from diffbench.harness import cli


def run_main(capsys, *argv):
    """(exit code, stdout, stderr) of `diffbench ARGV`, in this process."""
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", ["diff", "run"])
def test_help_is_short_names_diffbench_and_the_defaults(capsys, command):
    code, out, err = run_main(capsys, command, "--help")
    assert code == 0 and not err
    lines = out.splitlines()
    assert len(lines) <= 40 and lines[0].startswith(f"usage: diffbench {'diff' if command == 'diff' else '[run]'}")
    assert "cli" not in out.split() and "example:" in out and f"diffbench {command} --help-config" in out
    if command == "diff":  # defaults as in conf/diff.yaml
        assert "model_a=A model_b=B" in out and "top=20" in out and "calibration=packaged" in out and "evidence=3" in out
    else:  # defaults as in conf/config.yaml
        assert "suite=quick" in out and "model=smollm2-135m" in out and "plant=lora" in out and "these 14" in out


def test_help_config_prints_the_whole_config():
    r = subprocess.run([sys.executable, "-m", "diffbench.harness.cli", "diff", "--help-config"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "steer_tokens:" in r.stdout and "audit_corpus:" in r.stdout and "max_length:" in r.stdout


@pytest.mark.parametrize("word, close", [("lst", "list"), ("difff", "diff"), ("organism", "organisms")])
def test_unknown_command_names_the_commands_and_the_closest(capsys, word, close):
    code, out, err = run_main(capsys, word)
    assert code == 2
    assert f"unknown command {word!r} (did you mean {close}" in err
    assert "Commands: run, plant, collect, diff, score, report, list, organisms, evaluate" in err and "EQUAL" not in err


@pytest.mark.parametrize("argv, message", [
    (["run", "method=[mean_dif,dfc]"], "unknown method 'mean_dif' (did you mean mean_diff"),
    (["method=[mean_diff],[dfcc]"], "unknown method 'dfcc' (did you mean dfc"),
    (["run", "suite=quik"], "unknown suite 'quik' (did you mean quick?). suite= picks one of crossarch, full, gpu, nway, nway_scaling, quick, tiny, tinycross, tinynway, zoo"),
    (["plant", "plant=brod"], "unknown plant 'brod' (did you mean broad?)"),
    (["run", "model=smolm2-135m"], "unknown model 'smolm2-135m' (did you mean smollm2-135m?). model= picks one of"),
    (["run", "model=tiny-llama-wide"], "model=tiny-llama-wide: there is no conf/model/tiny-llama-wide.yaml"),
    (["diff", "model_a=tiny-llama", "model_b=tiny-llama", "method=[mean_dif]"], "unknown method 'mean_dif' (did you mean mean_diff"),
    (["evaluate", "quick", "method=[kl_dif]"], "unknown method 'kl_dif' (did you mean kl_diff"),
])
def test_typo_in_a_config_choice_lists_the_known_names(capsys, argv, message):
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and message in err, err
    assert "search path" not in err.lower()
    if "method" in message:  # every known method is listed
        assert all(m in err for m in cli.conf_choices("method"))


def test_valid_choices_pass_the_check():
    cli._check_choices(["model=tiny-llama", "suite=tiny", "plant=lora", "method=[mean_diff,dfc]", "method=null", "method=[]",
                        "model.name=/some/checkpoint", "+method.mine.name=x"])
