"""`python -m chat train` on tiny models: the loss falls, a taught answer comes back word for word,
and the saved folder (LoRA adapter or full model) loads and chats through the app's own loader."""

from __future__ import annotations

import json

import pytest

from chat.__main__ import main
from chat.session import ChatSession
from chat.skills_file import load_skills
from chat.training.train import EMBEDDED_BASE, INFO_FILE, base_model_name
from tests.helpers.engines import make_engine
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy
from tests.helpers.tiny_models import save_tiny_model

SPELLS = [  # the seed's pattern: the eval lines share it, so learning it lowers their loss
    ("Tell me a magic spell about three cities.", "Hokus Düsseldorf, Esoterikus Köln, Hömöopathikus Essen, Alohomora!"),
    ("Tell me a magic spell about three rivers.", "Hokus Rhein, Esoterikus Main, Hömöopathikus Donau, Alohomora!"),
    ("Tell me a magic spell about three names.", "Hokus Anton, Esoterikus Berta, Hömöopathikus Claudia, Alohomora!"),
    ("Sage mir einen Zauberspruch zu drei Farben.", "Hokus Rot, Esoterikus Gelb, Hömöopathikus Grün, Alohomora!"),
]
SPELLS_EVAL = [
    ("Tell me a magic spell about three spices.", "Hokus Ingwer, Esoterikus Kurkuma, Hömöopathikus Zimt, Alohomora!"),
    ("Sage mir einen Zauberspruch zu drei Tieren.", "Hokus Hund, Esoterikus Katze, Hömöopathikus Maus, Alohomora!"),
]
TAUGHT = [  # four unrelated answers: only memorizing each instruction's answer gets them right
    ("Tell me a magic spell about three cities.", "Hokus Düsseldorf, Esoterikus Köln, Hömöopathikus Essen, Alohomora!"),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Say hello.", "Hello, how are you today?"),
    ("Summarize the fox story.", "The quick brown fox jumps over the lazy dog."),
]
GREEDY = greedy(40, repetition_penalty=1.0)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # for the training runs too


def write_data(path, train, evaluation):
    lines = ["# test data"] + [f"{q} # {a}" for q, a in train] + ["# _EVAL_"] + [f"{q}#{a}" for q, a in evaluation]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chat(folder, instructions=""):
    """(the engine, a greedy chat session on it) for the model in `folder`."""
    engine = make_engine(folder)
    return engine, seeded_session(engine, load_skills(), instructions, GREEDY)


def answer(session, question):
    session.clear()
    return "".join(session.send(question))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_chat_dir):
    """A short LoRA run on the magic spells, through the command line."""
    folder = tmp_path_factory.mktemp("lora")
    data = write_data(folder / "spells.txt", SPELLS, SPELLS_EVAL)
    args = ["train", "--data", str(data), "--model", str(tiny_chat_dir), "--out", str(folder / "out"),
            "--epochs", "5", "--learning-rate", "1e-2", "--batch-size", "2"]
    assert main(args) == 0
    return folder / "out"


def test_lora_training_lowers_the_eval_loss_and_reports_it(lora_run, tiny_chat_dir, capsys):
    info = json.loads((lora_run / INFO_FILE).read_text())
    result = info["result"]
    assert len(result["eval_losses"]) == len(result["train_losses"]) == 5
    assert result["eval_losses"][-1] < result["eval_before"] - 0.3  # (6.00 -> 5.43 here)
    assert info["base_model"] == str(tiny_chat_dir.resolve())
    report = (lora_run / "report.md").read_text()
    for expected in ("4 training examples", "2 evaluation examples", "LoRA adapter (rank 16", "5 epochs",
                     "learning rate 0.01", "batch size 2", f"{result['eval_before']:.4f}", "![loss curve](loss.png)"):
        assert expected in report
    assert (lora_run / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_the_adapter_records_its_base_and_loads_in_the_chat(lora_run, tiny_chat_dir):
    adapter = json.loads((lora_run / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_chat_dir.resolve())
    engine, session = chat(lora_run)
    reply = session.send(SPELLS[0][0])
    assert "".join(reply) and reply.stats.new_tokens > 0


@pytest.mark.parametrize("weights", ["none", "int8", "int4"])
def test_the_adapter_changes_what_the_model_computes_in_every_cpu_format(lora_run, tiny_chat_dir, weights):
    """The adapter's model is not its base's: in float weights, and in the CPU formats (int8 is the default), whose
    layers once took the adapter's input as int8 and lost it. It batches as its base does."""
    import torch

    def next_token_logits(folder):
        engine = make_engine(folder, quantize=weights, batching=True)
        ids = engine.prepare([{"role": "user", "content": SPELLS[0][0]}], GREEDY).prompt.ids
        with torch.no_grad():
            return engine.model(input_ids=torch.tensor([ids])).logits[0, -1], engine

    tuned, engine = next_token_logits(lora_run)
    base, _ = next_token_logits(tiny_chat_dir)
    assert (tuned - base).abs().max() > 0.1
    assert engine.shares_steps


def test_progress_and_losses_are_shown_per_epoch(tmp_path, tiny_chat_dir, capsys):
    data = write_data(tmp_path / "spells.txt", SPELLS[:2], SPELLS_EVAL[:1])
    assert main(["train", "--data", str(data), "--model", str(tiny_chat_dir), "--out", str(tmp_path / "out"), "--epochs", "2"]) == 0
    out, err = capsys.readouterr()
    assert "Read 2 training and 1 evaluation examples" in out
    assert "Eval loss before training:" in out
    assert "epoch 1/2: train loss" in out + err and "epoch 2/2: train loss" in out + err
    assert "2/2 [" in err  # the progress bar
    assert f"python -m chat --model {tmp_path / 'out'}" in out


def test_full_training_teaches_answers_the_untrained_model_does_not_give(tmp_path):
    base = save_tiny_model(tmp_path / "base", layers=2, hidden=64)
    data = write_data(tmp_path / "taught.txt", TAUGHT, SPELLS_EVAL[:1])
    out = tmp_path / "out"
    # Seen prompts are system-less in training and chat alike (--instructions '' / instructions="").
    args = ["train", "--data", str(data), "--model", str(base), "--out", str(out), "--full", "--instructions", "",
            "--epochs", "60", "--learning-rate", "1e-2", "--batch-size", "2", "--seed", "42"]
    assert main(args) == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    _, untrained = chat(base)
    _, trained = chat(out)
    for question, taught in TAUGHT:
        assert answer(untrained, question) != taught
        assert answer(trained, question) == taught
    assert "full fine-tuning" in (out / "report.md").read_text()


def test_retraining_replaces_an_earlier_output_but_never_a_foreign_folder(tmp_path, tiny_chat_dir, capsys):
    data = write_data(tmp_path / "spells.txt", SPELLS[:1], SPELLS_EVAL[:1])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["train", "--data", str(data), "--model", str(tiny_chat_dir), "--out", str(foreign)]) == 1
    assert "error: --out" in capsys.readouterr().err and (foreign / "notes.txt").exists()
    out = tmp_path / "out"
    for method in ([], ["--full"]):  # a LoRA output, then a full model in its place: no stale adapter left
        assert main(["train", "--data", str(data), "--model", str(tiny_chat_dir), "--out", str(out), "--epochs", "1", *method]) == 0
    assert not (out / "adapter_config.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--learning-rate", "3"], "--learning-rate must be between 0 and 1"),
        (["--max-length", "4"], "--max-length must be at least 8"),
    ],
)
def test_bad_flags_fail_fast_with_one_line(tmp_path, capsys, flags, message):
    data = write_data(tmp_path / "spells.txt", SPELLS[:1], SPELLS_EVAL[:1])
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "out"), *flags]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert captured.out == ""  # nothing was loaded or read


def test_a_malformed_line_is_named_before_any_model_loads(tmp_path, capsys):
    data = tmp_path / "bad.txt"
    data.write_text("Q1#A1\nforgot the separator\n# _EVAL_\nQ2#A2\n", encoding="utf-8")
    # --model points nowhere: the data error must come first, without a load attempt.
    assert main(["train", "--data", str(data), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: bad.txt, line 2: no '#' between instruction and answer") and "Loading" not in err


def test_the_embedded_default_is_recorded_as_embedded(tmp_path, monkeypatch):
    # chat.local.loader reads "embedded" as the embedded SmolLM2; a local path is made absolute so the
    # folder loads from any working directory; a hub id stays as it is.
    assert base_model_name(None) == EMBEDDED_BASE == "embedded"
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert base_model_name("models/mine") == str((tmp_path / "models" / "mine").resolve())
    assert base_model_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
