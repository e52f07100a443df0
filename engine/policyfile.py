"""Reading policy files: YAML in, a checked `PolicyConfig` out, or a `PolicyError`."""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.policy.config import PolicyConfig, PolicyError, policy_from_mapping

POLICIES_DIR = Path(__file__).resolve().parent.parent / "policies"
DEFAULT_POLICY = POLICIES_DIR / "default.yaml"


class PolicyFileError(PolicyError):
    """A policy file that cannot be used; the message names the file, the field and the rule."""

    def __init__(self, path: Path, field_path: str, rule: str) -> None:
        super().__init__(field_path, rule)
        self.path = path
        self.args = (f"{path}: {field_path}: {rule}",)


def load_policy(path: str | Path | None = None) -> PolicyConfig:
    policy_path = Path(path) if path is not None else DEFAULT_POLICY
    try:
        text = policy_path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyFileError(policy_path, "(file)", f"cannot be read: {error.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyFileError(policy_path, "(yaml)", f"is not valid YAML: {error}") from None
    try:
        return policy_from_mapping(raw, name=policy_path.stem)
    except PolicyError as error:
        raise PolicyFileError(policy_path, error.field, error.rule) from None
