"""One synthesis per test session: two tenants, cdk-nag on, bundling skipped."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk.assertions import Template

from infra.application import BUILD_DIR_CONTEXT, build_app

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Synthesized:
    app: cdk.App
    outdir: Path
    build_dir: Path
    templates: dict[str, Template]
    # The error app.synth() raised (cdk-nag findings fail the synth), or None.
    synth_error: Exception | None


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    build_dir = tmp_path_factory.mktemp("build")
    outdir = tmp_path_factory.mktemp("cdk.out")
    context = {
        "tenants": [str(FIXTURES / "alpha.yaml"), str(FIXTURES / "beta.yaml")],
        "aws:cdk:bundling-stacks": [],
        BUILD_DIR_CONTEXT: str(build_dir),
    }
    app = build_app(context, outdir=str(outdir))
    synth_error: Exception | None = None
    try:
        assembly = app.synth()
    except RuntimeError as e:  # jsii surfaces ValidationFailed as RuntimeError
        synth_error = e
        assembly = None
    templates = {s.stack_name: Template.from_json(s.template) for s in assembly.stacks} if assembly else {}
    return Synthesized(app, outdir, build_dir, templates, synth_error)


@pytest.fixture(scope="session")
def alpha(synthesized: Synthesized) -> Template:
    return _template(synthesized, "Guard-alpha")


@pytest.fixture(scope="session")
def beta(synthesized: Synthesized) -> Template:
    return _template(synthesized, "Guard-beta")


def _template(synthesized: Synthesized, stack: str) -> Template:
    if synthesized.synth_error is not None:
        pytest.fail(f"the app did not synthesize: {str(synthesized.synth_error)[:2000]}")
    return synthesized.templates[stack]
