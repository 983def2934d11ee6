"""Loading on this CPU machine: 8/4-bit, sharding and disk offload, dtypes, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from chat.errors import ModelLoadError
from chat.local.loader import LoadOptions, load_model, parse_max_memory
from tests.helpers.engines import make_engine
from tests.helpers.settings import greedy

GREEDY = greedy(5)
MESSAGES = [{"role": "user", "content": "Hello, how are you?"}]


def greedy_text(engine) -> tuple[str, int]:
    generation = engine.generate(engine.prepare(MESSAGES, GREEDY), GREEDY)
    text = "".join(generation)
    return text, generation.stats.new_tokens


@pytest.fixture(scope="module")
def reference_text(tiny_engine):
    return greedy_text(tiny_engine)[0]


def test_plain_load_runs_on_the_cpu_in_float32(tiny_engine):
    assert tiny_engine.device.startswith("CPU, float32 weights")
    assert tiny_engine.model.dtype == torch.float32  # dtype "auto" on a CPU: exact, and the kernels' fast path there


@pytest.mark.parametrize("mode, layer_class", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_quantized_load_generates(tiny_chat_dir, mode, layer_class):
    engine = make_engine(tiny_chat_dir, quantize=mode)
    assert type(engine.model.model.layers[0].self_attn.q_proj).__name__ == layer_class
    text, new_tokens = greedy_text(engine)
    assert new_tokens == GREEDY.max_new_tokens and text


def test_bfloat16_load_generates(tiny_chat_dir):
    engine = make_engine(tiny_chat_dir, dtype="bfloat16")
    assert engine.model.dtype == torch.bfloat16
    assert greedy_text(engine)[1] == GREEDY.max_new_tokens


def test_max_memory_spreads_layers_over_gpus_cpu_and_disk(tiny_chat_dir):
    """What --device-map auto --max-memory does on a multi-GPU machine, planned here without GPUs."""
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import compute_module_sizes, convert_file_size_to_int
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_chat_dir, num_hidden_layers=8)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    max_memory = parse_max_memory("0=500KB,1=500KB,cpu=500KB,disk=1GB")
    placement = infer_auto_device_map(
        model, max_memory=dict(max_memory), no_split_module_classes=model._no_split_modules
    )

    assert set(placement.values()) == {0, 1, "cpu", "disk"}
    order = [0, 1, "cpu", "disk"]
    layers = [placement[f"model.layers.{i}"] for i in range(8)]
    assert layers == sorted(layers, key=order.index)  # consecutive layers, GPUs first, disk last
    sizes = compute_module_sizes(model)
    for device in (0, 1, "cpu"):
        used = sum(sizes[name] for name, placed in placement.items() if placed == device)
        assert used <= convert_file_size_to_int(max_memory[device])


def test_offloading_part_of_the_model_to_disk_still_generates(tiny_chat_dir, tmp_path, reference_text):
    engine = make_engine(tiny_chat_dir, device_map="auto", max_memory="cpu=400KB", cache_dir=str(tmp_path))
    assert {"cpu", "disk"} <= set(engine.model.hf_device_map.values())
    assert engine.device.startswith("sharded:") and "on disk" in engine.device
    assert greedy_text(engine)[0] == reference_text  # same weights, same answer


@pytest.fixture
def all_on_disk(tiny_chat_dir, tmp_path):
    return make_engine(tiny_chat_dir, device_map="auto", max_memory="cpu=50KB", cache_dir=str(tmp_path))


def test_a_model_entirely_on_disk_says_so(all_on_disk):
    assert set(all_on_disk.model.hf_device_map.values()) == {"disk"}
    assert all_on_disk.device.startswith("disk")


def test_a_model_entirely_on_disk_still_generates(all_on_disk, reference_text):
    assert greedy_text(all_on_disk)[0] == reference_text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0=20GiB,1=20GiB,cpu=64GiB", {0: "20GiB", 1: "20GiB", "cpu": "64GiB"}),
        (" cpu = 500MB , disk=2TB ", {"cpu": "500MB", "disk": "2TB"}),
        ("mps=8GB", {"mps": "8GB"}),
        ("", None),
    ],
)
def test_max_memory_text(text, expected):
    assert parse_max_memory(text) == expected


@pytest.mark.parametrize(
    "text, problem",
    [
        ("cpu", "can't read 'cpu'"),
        ("cpu=lots", "can't read 'cpu=lots'"),
        ("cpu=20", "can't read 'cpu=20'"),
        ("0=20GiB,", "can't read ''"),
        ("gpu0=20GiB", "unknown device 'gpu0'"),
    ],
)
def test_bad_max_memory_text_is_one_clear_line(text, problem):
    with pytest.raises(ModelLoadError, match=f"--max-memory: {problem}") as caught:
        parse_max_memory(text)
    assert "e.g. 0=20GiB" in str(caught.value) or "use GPU numbers, cpu or disk" in str(caught.value)


def load_error(options: LoadOptions) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_model(options, say=lambda _: None)
    error = caught.value
    assert "\n" not in str(error)  # the CLI prints it as one line
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # nothing chained
    return str(error)


@pytest.mark.parametrize("name", ["{tmp}/no-such-model", "./no-such-model", "~/no/such/model"])
def test_a_missing_folder_is_reported_as_not_found(tmp_path, name):
    message = load_error(LoadOptions(model=name.format(tmp=tmp_path)))
    assert message.startswith("model folder not found: ")


def test_an_unknown_hub_id_offline_is_reported_as_not_found(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import, not per call
    message = load_error(LoadOptions(model="nobody-xyz/no-such-model-123"))
    assert "'nobody-xyz/no-such-model-123' not found" in message and "offline" in message


def test_gguf_problems_are_one_line(tmp_path):
    assert "GGUF file not found" in load_error(LoadOptions(model=str(tmp_path / "missing.gguf")))
    broken = tmp_path / "broken.gguf"
    broken.write_text("not a gguf file")
    message = load_error(LoadOptions(model=str(broken), cache_dir=str(tmp_path / "cache")))
    assert "could not convert" in message and "broken.gguf" in message
    assert not list((tmp_path / "cache" / "converted").glob("*"))  # no half-converted folder left behind


@pytest.mark.parametrize(
    "options, problem",
    [
        (dict(quantize="2bit"), "--quantize must be one of auto, none, 8bit, 4bit, int8, int4"),
        (dict(dtype="float64"), "--dtype must be one of auto, bfloat16, float16, float32"),
        (dict(device_map="auto", max_memory="cpu=lots"), "--max-memory: can't read"),
    ],
)
def test_bad_options_are_one_line(tiny_chat_dir, options, problem):
    assert problem in load_error(LoadOptions(model=str(tiny_chat_dir), **options))


def test_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert "expected a folder, a .gguf file or a hub id" in load_error(LoadOptions(model=str(path)))
