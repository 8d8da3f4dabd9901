"""reach.pattern gives exactly what the C++ pattern/ code gives: compared with
`reach pattern --json` (the CLI), both conventions, every schedule."""

import json
import os
import shutil
import subprocess

import pytest

import reach

HERE = os.path.dirname(os.path.abspath(__file__))
CLI = os.environ.get("REACH_CLI") or os.path.join(HERE, "..", "..", "build", "reach")

CONFIGS = [
    dict(convention="reach", schedule="stagger", layers=8, window=16, reach=1024),
    dict(convention="reach", schedule="coprime", layers=12, window=8, reach=4096, alpha_max=4.0),
    dict(convention="reach", schedule="fixed", layers=3, window=32, reach=2048, alpha=1.7),
    dict(convention="reach", schedule="learned", layers=4, window=16, reach=512),
    dict(convention="reach", schedule="stagger", layers=6, window=4, reach=300, base="power_of_two"),
    dict(convention="paper", schedule="stagger", layers=16, window=12, seq_len=1024),
    dict(convention="paper", schedule="coprime", layers=16, window=12, seq_len=4096),
    dict(convention="paper", schedule="learned", layers=5, window=12, seq_len=1024),
    dict(convention="paper", schedule="fixed", layers=2, window=3, seq_len=700, base="power_of_two"),
]


def _cli(config):
    if not os.path.exists(CLI):
        pytest.skip(f"no reach CLI at {CLI} (build the C++ project or set REACH_CLI)")
    args = [CLI, "pattern", "--json"]
    for key, value in config.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_layer_patterns_equal_the_cli(config):
    expected = _cli(config)
    got = reach.pattern.layer_patterns(**config)
    n = expected["seq_len"]
    assert len(got) == len(expected["per_layer"])
    for layer, want in zip(got, expected["per_layer"]):
        assert layer.alpha == want["alpha"]
        assert layer.window_keys == want["window_keys"]
        assert layer.offsets == want["offsets"]
        assert layer.distances(n) == want["distances"]
        assert reach.pattern.attended_fraction(n, layer.window_keys, layer.offsets) == pytest.approx(
            want["attended_fraction"], rel=1e-15)
        assert layer.learned_distances == pytest.approx(want.get("learned_distances", []), rel=1e-15)
    if "coprime_step" in expected:
        step = (reach.pattern.paper_coprime_step if config["convention"] == "paper"
                else reach.pattern.coprime_step)(config["layers"])
        assert step == expected["coprime_step"]


def test_known_values():
    # docs/definitions.md: Fibonacci offsets for W = 4, R = 40 at alpha 1 and 2.
    assert reach.pattern.dilated_offsets(4, 40) == [5, 8, 13, 21, 34]
    assert reach.pattern.dilated_offsets(4, 40, alpha=2.0) == [4, 6, 10, 16, 26]
    assert reach.pattern.paper_coprime_step(16) == 7
    assert reach.pattern.paper_layer_alphas(3) == [0.5, 1.0, 1.5]
    assert reach.pattern.layer_alphas(3, "stagger", alpha_min=1.0, alpha_max=3.0) == [1.0, 2.0, 3.0]


def test_bad_arguments_name_the_problem():
    with pytest.raises(RuntimeError, match="base"):
        reach.pattern.dilated_offsets(4, 40, base="primes")
    with pytest.raises(RuntimeError, match="window"):
        reach.pattern.dilated_offsets(0, 40)
    with pytest.raises(RuntimeError, match="schedule"):
        reach.pattern.layer_alphas(4, "zigzag")
    with pytest.raises(ValueError, match="convention"):
        reach.pattern.layer_patterns(4, 8, convention="other")
