"""Each sampling setting is declared once (chat/settings.py); its flag, slider, page parameter, API
field and `generate` argument come from that declaration. Checked for every setting, min_p included."""

from __future__ import annotations

import argparse

import pytest

from chat.cli.args import add_sampling_arguments, settings_from_args
from chat.local.engine import sampling_kwargs
from chat.settings import SETTINGS, GenerationSettings
from chat.errors import SettingsError
from tests.helpers.apps import running_app
from tests.helpers.clients import new_client
from tests.helpers.engines import RecordingEngine, make_engine

NAMES = [declared.name for declared in SETTINGS]


def parse(*argv: str) -> GenerationSettings:
    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_every_setting_has_a_flag_that_reaches_the_settings():
    assert parse() == GenerationSettings()
    settings = parse("--min-p", "0.1", "--top-k", "7", "--seed", "3", "--temperature", "0")
    assert (settings.min_p, settings.top_k, settings.seed, settings.greedy) == (0.1, 7, 3, True)


@pytest.mark.parametrize("declared", SETTINGS, ids=NAMES)
def test_each_setting_is_refused_outside_its_declared_range(declared):
    with pytest.raises(SettingsError, match=declared.name):
        GenerationSettings().replace(**{declared.name: declared.high + 1})
    slider_low, slider_high, _ = declared.ui
    assert declared.low <= max(slider_low, declared.low) and slider_high <= declared.high  # sliders offer only allowed values


def test_generate_gets_min_p_only_when_sampling_and_on():
    assert sampling_kwargs(GenerationSettings(min_p=0.1), 8)["min_p"] == 0.1
    assert "min_p" not in sampling_kwargs(GenerationSettings(), 8)  # 0 = off: not passed at all
    assert "min_p" not in sampling_kwargs(GenerationSettings(min_p=0.1, temperature=0), 8)  # greedy


@pytest.fixture(scope="module")
def app(tiny_chat_dir):
    engine = RecordingEngine(make_engine(tiny_chat_dir))
    with running_app(engine, GenerationSettings(max_new_tokens=4)) as (demo, url):
        yield demo, url, engine


def test_the_page_has_a_control_for_every_setting_and_programs_set_them_by_name(app):
    demo, url, engine = app
    labels = {c.label for c in demo.blocks.values() if hasattr(c, "label")}
    assert {declared.label for declared in SETTINGS} <= labels
    client = new_client(url)
    parameters = [p["parameter_name"] for p in client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/send"]["parameters"]]
    assert parameters[-len(SETTINGS):] == NAMES
    _, _, status, _, *_ = client.predict("Hi", min_p=0.5, temperature=1.0, max_new_tokens=3, api_name="/send")
    assert "3 tokens" in status and engine.generations[-1].settings.min_p == 0.5
