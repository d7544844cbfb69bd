"""Specification of the method registry and of config round-trips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from toolkit_core.errors import UserInputError
from vision_unlearn import registry
from vision_unlearn.api import (
    config_from_dict,
    config_to_dict,
    create_unlearner,
    dump_config_yaml,
    load_config_yaml,
    parse_overrides,
)
from vision_unlearn.protocols import MethodConfig


@dataclass(frozen=True)
class _ToyConfig(MethodConfig):
    beta: float = 0.5
    mode: Literal["a", "b"] = "a"
    steps: tuple[int, ...] = (1, 2)
    note: str | None = None


def test_duplicate_registration_raises() -> None:
    class _A:
        config_class = _ToyConfig
        epoch_over = "forget"
        needs = frozenset({"forget"})

    class _B(_A):
        pass

    registry.register_unlearner("toy_dup_test")(_A)
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.register_unlearner("toy_dup_test")(_B)
    finally:
        registry._REGISTRY.pop("toy_dup_test", None)


def test_bad_name_raises() -> None:
    with pytest.raises(ValueError, match="identifier"):
        registry.register_unlearner("Not-A-Name")


def test_unknown_method_is_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown unlearning method"):
        create_unlearner("no_such_method")


def test_config_round_trip_dict_and_yaml(tmp_path) -> None:
    config = _ToyConfig(lr=0.1, beta=2, mode="b", steps=(3, 4, 5), note="x")
    assert config.beta == 2
    as_dict = config_to_dict(config)
    assert as_dict["steps"] == [3, 4, 5]
    assert config_from_dict(_ToyConfig, as_dict) == config
    path = tmp_path / "c.yaml"
    path.write_text(dump_config_yaml(config))
    assert load_config_yaml(_ToyConfig, path) == config


@pytest.mark.parametrize(
    ("data", "field"),
    [({"beta": "high"}, "beta"), ({"mode": "c"}, "mode"), ({"epochs": 1.5}, "epochs"),
     ({"unknown": 1}, "unknown"), ({"steps": 3}, "steps"), ({"epochs": True}, "epochs")],
)
def test_bad_config_values_name_the_field(data, field) -> None:
    with pytest.raises(UserInputError) as info:
        config_from_dict(_ToyConfig, data, source="cfg.yaml")
    assert info.value.field == field
    assert "cfg.yaml" in str(info.value)


def test_int_accepted_for_float_and_overrides_parse() -> None:
    assert config_from_dict(_ToyConfig, {"lr": 1}).lr == 1.0
    assert parse_overrides(["lr=0.5", "mode=b", "steps=[1, 2]"]) == {"lr": 0.5, "mode": "b", "steps": [1, 2]}
    with pytest.raises(UserInputError):
        parse_overrides(["lr"])


def test_exponent_without_a_dot_is_a_float(tmp_path) -> None:
    """YAML 1.1 reads ``1e-3`` as a string; ``--set lr=1e-3`` and ``lr: 1e-3`` in a file must still work."""
    assert config_from_dict(_ToyConfig, parse_overrides(["lr=1e-3", "beta=2E+1"])) == _ToyConfig(lr=1e-3, beta=20.0)
    path = tmp_path / "c.yaml"
    path.write_text("lr: 5e-4\n")
    assert load_config_yaml(_ToyConfig, path).lr == 5e-4
    with pytest.raises(UserInputError):  # only numbers: a word stays a string and is refused
        config_from_dict(_ToyConfig, {"lr": "1e-3x"})
    assert config_from_dict(_ToyConfig, {"note": "1e-3"}).note == "1e-3"  # a str field keeps the text


def test_bad_yaml_is_user_error(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: [unclosed\n")
    with pytest.raises(UserInputError, match="YAML"):
        load_config_yaml(_ToyConfig, path)
    with pytest.raises(UserInputError, match="not found"):
        load_config_yaml(_ToyConfig, tmp_path / "missing.yaml")
