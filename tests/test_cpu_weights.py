"""CPU weight formats (`--quantize int8/int4`): the app answers with them as it does with float weights.

Every check runs on a real tiny model loaded through the app's loader and quantized by it: batched
answers are the answers alone (greedy and seeded sampling), Stop halts an answer, the prefix cache is
reused and changes nothing, and the model's token probabilities stay close to the float model's.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from chat.engine import StopReason
from chat.errors import ModelLoadError
from chat.local.cpu_weights import PREFILL_ROWS, Int4Linear, Int8Linear, quantize_for_cpu, weight_bytes
from chat.local.loader import LoadOptions, chosen_quantize
from chat.local.omp_threads import release_this_threads_team
from chat.provenance import Provenance
from chat.settings import GenerationSettings
from chat.skills_file import load_skills
from tests.helpers.engines import at_once, engine_on, load_quietly, started_together
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy
from tests.helpers.waiting import wait_for

GREEDY = greedy(24)
SEEDED = GenerationSettings(temperature=0.9, top_p=0.9, top_k=40, seed=11, max_new_tokens=24)
PROMPTS = ["Hello there", "What is the capital of France? Tell me more.", "Hi", "Summarize: the quick brown fox jumps."]
LAYER = {"int8": Int8Linear, "int4": Int4Linear}
# Largest change of any next-token probability against the float model, over every position of a prompt.
# Measured on the tiny model (TINY_MODEL_SEED 0 and 1): int8 2e-5, int4 2e-4; the limits leave 25-50x for other CPUs.
TOLERANCE = {"int8": 0.001, "int4": 0.005}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["int8", "int4"])
def weights(request):
    return request.param


@pytest.fixture(scope="module")
def loaded(tiny_chat_dir, weights):
    return load_quietly(tiny_chat_dir, quantize=weights)


@pytest.fixture(scope="module")
def engines(loaded):
    """(one answer at a time, batched) over the same quantized weights."""
    return engine_on(loaded), engine_on(loaded, batching=True)


def prompt(engine, text: str, settings: GenerationSettings):
    return engine.prepare([{"role": "user", "content": text}], settings)


def test_every_linear_layer_is_quantized_and_the_device_line_says_so(loaded, weights):
    decoder = loaded.model.model
    layers = [decoder.layers[0].self_attn.q_proj, decoder.layers[0].mlp.down_proj, decoder.layers[-1].self_attn.o_proj]
    assert all(type(layer) is LAYER[weights] for layer in layers)
    assert not any(type(module) is nn.Linear for module in decoder.modules())
    assert loaded.weights == weights and loaded.device.startswith(f"CPU, {weights} weights")


def test_the_weights_are_smaller(tiny_chat_dir, loaded, weights):
    floats = load_quietly(tiny_chat_dir).model
    ratio = weight_bytes(loaded.model) / weight_bytes(floats)
    assert ratio < {"int8": 0.5, "int4": 0.4}[weights]  # the float embedding table stays; its tied output layer shrinks


@pytest.mark.parametrize("settings", [GREEDY, SEEDED], ids=["greedy", "seeded sampling"])
def test_answers_batched_are_the_answers_alone(engines, settings):
    plain, batched = engines
    alone = ["".join(plain.generate(prompt(plain, text, settings), settings)) for text in PROMPTS]
    batched.batcher.largest_batch = 0
    together = at_once(started_together(batched, [prompt(batched, text, settings) for text in PROMPTS], settings))
    assert together == alone
    assert batched.batcher.largest_batch > 1
    assert all(alone)


def test_probabilities_stay_close_to_the_float_models(tiny_chat_dir, loaded, weights):
    floats = load_quietly(tiny_chat_dir).model
    ids = torch.tensor([loaded.tokenizer("The quick brown fox jumps over the lazy dog, again and again.")["input_ids"]])
    with torch.inference_mode():
        exact = floats(input_ids=ids).logits.softmax(-1)
        close = loaded.model(input_ids=ids).logits.softmax(-1)
    change = (exact - close).abs().max().item()
    assert change < TOLERANCE[weights]
    assert not torch.equal(exact, close)  # the weights really changed


def test_a_long_prompt_read_at_once_agrees_with_the_same_tokens_read_one_by_one(loaded, weights):
    """Int8 weights read a prompt's many rows in one bfloat16 product (the fast path for long texts) and a
    decoding step's few rows with the kernel: both give the model's probabilities within the tolerance."""
    from transformers import DynamicCache

    text = " ".join(["The quick brown fox jumps over the lazy dog, again and again."] * 8)
    ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
    assert ids.shape[1] >= PREFILL_ROWS
    with torch.inference_mode():
        at_once = loaded.model(input_ids=ids).logits.softmax(-1)
        cache, one_by_one = DynamicCache(config=loaded.model.config), []
        for position in range(ids.shape[1]):
            step = loaded.model(input_ids=ids[:, position : position + 1], past_key_values=cache, use_cache=True)
            one_by_one.append(step.logits.softmax(-1))
    assert (at_once - torch.cat(one_by_one, dim=1)).abs().max().item() < TOLERANCE[weights]


def test_stop_halts_an_answer(tiny_chat_dir, weights):
    engine = engine_on(load_quietly(tiny_chat_dir, quantize=weights), endless=True)
    steps, stopped = [], threading.Event()

    def hold_after_five_steps(module, inputs):  # the answer can't end on its own before Stop is pressed
        steps.append(1)
        if len(steps) > 5:
            stopped.wait(30)

    engine.model.register_forward_pre_hook(hold_after_five_steps)
    settings = greedy(400)
    generation = engine.generate(prompt(engine, "Tell me a long story", settings), settings)
    assert wait_for(lambda: len(steps) > 5, 30)
    generation.cancel()
    stopped.set()
    "".join(generation)
    assert wait_for(lambda: not generation.running, 10)
    assert generation.stats.stop_reason == StopReason.CANCELLED
    assert generation.stats.new_tokens < 10


def test_the_prefix_cache_is_reused_and_changes_nothing(engines):
    plain, _ = engines
    session = seeded_session(plain, load_skills(), "Be brief.", GREEDY)
    "".join(session.send("Hello there"))
    assert session.kv_cache.wait_free(30)
    second = session.send("And what about France?")
    text = "".join(second)
    assert second.stats.cached_tokens > 0
    assert text == "".join(plain.generate(second.fitted, second.generation.settings))  # from scratch: the same


def test_the_answers_provenance_records_the_weights(engines, weights):
    plain, _ = engines
    session = seeded_session(plain, load_skills(), "", GREEDY)
    "".join(session.send("Hello"))
    provenance = session.history[-1]["provenance"]
    assert isinstance(provenance, Provenance) and f"{weights} weights" in provenance.device


def test_layers_the_kernel_cant_take_keep_their_float_weights():
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 6), nn.Linear(6, 16))  # int4 packs 16 rows × 32 inputs at a time
    assert quantize_for_cpu(model, "int4") == 1
    assert [type(layer) for layer in model] == [Int4Linear, nn.Linear, nn.Linear]


def test_auto_picks_a_cpu_format_on_a_cpu_and_cpu_formats_are_refused_on_gpus(tiny_chat_dir):
    assert chosen_quantize(LoadOptions(quantize="auto"), gpu=False) in ("int8", "int4")
    assert chosen_quantize(LoadOptions(quantize="auto"), gpu=True) == "none"
    assert chosen_quantize(LoadOptions(quantize="auto", device_map="auto"), gpu=False) == "none"
    with pytest.raises(ModelLoadError, match="on GPUs use --quantize 8bit or 4bit"):
        chosen_quantize(LoadOptions(quantize="int8"), gpu=True)
    assert load_quietly(tiny_chat_dir, quantize="auto").weights in ("int8", "int4")


def test_the_loading_thread_lets_its_openmp_team_go():
    """Answers compute on other threads; the loader's idle team would make theirs sleep between kernels."""
    torch.ones(1_000_000).sum()  # a kernel big enough to run on this thread's team
    assert release_this_threads_team()
