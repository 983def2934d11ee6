"""`python -m chat train`: teach a model new instructions from a file, with LoRA or in full.

Why transformers' `Trainer` and not trl's `SFTTrainer`: the one thing SFTTrainer would add here is
completion-only loss, and that is a label list with -100 on the prompt tokens, which we build
ourselves from the very prompt the chat sends (`chat.train_data.Encoder`). `Trainer` with
`DataCollatorForSeq2Seq` (it pads labels with -100) then does the rest, progress bar, per-epoch
evaluation and GPU placement included, without a new dependency whose API moves fast.

The output folder loads with `--model DIR` in the app and the terminal chat: a LoRA adapter
records its base model (the `--model` given, or "embedded"), a full model is complete.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ..errors import ChatError
from ..formats import FORMATS, choose_format
from ..instructions import default_instructions, read_instructions
from ..local.loader import DTYPE_CHOICES, LoadOptions, load_model
from ..local.discovery import remember_trained
from .data import Encoder, count_examples, load_training_data

INFO_FILE = "training.json"  # marks a folder as ours: retraining may replace it
REPORT_FILE, PLOT_FILE = "report.md", "loss.png"
EMBEDDED_BASE = "embedded"  # what chat.local.loader reads as "the embedded default model"
LORA_LEARNING_RATE = 1e-3  # LoRA trains few weights from zero: it needs a larger step than full tuning
FULL_LEARNING_RATE = 5e-5  # full tuning moves every weight: small steps keep what the model knew


class TrainingError(ChatError):
    """Training can't start or finish: bad flags, an output folder in the way, a failed save."""


@dataclass(frozen=True)
class TrainOptions:
    """What `python -m chat train` was asked to do; mirrors its flags."""

    data: str
    out: str
    model: str | None = None  # None = the embedded SmolLM2
    full: bool = False  # False: train a LoRA adapter; True: every weight
    epochs: int = 10
    learning_rate: float | None = None  # None: LORA_LEARNING_RATE or FULL_LEARNING_RATE
    batch_size: int = 4
    max_length: int = 256  # tokens per example, prompt and answer together
    seed: int = 42
    lora_rank: int = 16  # size of the low-rank update: more = more capacity, more weights
    lora_alpha: int = 32  # the update is scaled by alpha / rank
    dtype: str = "auto"
    prompt_format: str = "auto"
    instructions: str | None = None  # None: the chat's default system instructions; "" = none
    user_name: str = "User"
    bot_name: str = "Assistant"
    cache_dir: str | None = None
    trust_remote_code: bool = False

    @property
    def rate(self) -> float:
        return self.learning_rate or (FULL_LEARNING_RATE if self.full else LORA_LEARNING_RATE)


@dataclass
class TrainResult:
    out: Path
    base_model: str
    device: str
    counts: dict[str, int]  # examples and answer tokens per part
    trainable: tuple[int, int]  # (trained parameters, all parameters)
    eval_before: float
    train_losses: list[float] = field(default_factory=list)  # one per epoch
    eval_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainOptions(data="", out="")
    parser.add_argument("--data", required=True, metavar="FILE", help="instructions: `instruction # answer` lines (.txt) or .jsonl")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the adapter or model, its report and loss curve")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="hub id, local folder or .gguf file to train (default: the embedded SmolLM2-135M-Instruct)")
    model.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="weight dtype (auto: float32 on CPU; on GPU bfloat16 for LoRA)")
    model.add_argument("--format", choices=FORMATS, default="auto", help="prompt format, as in the chat: the chat template or a transcript")
    model.add_argument("--instructions", metavar="TEXT_OR_FILE", help="system instructions to train with; match what you chat with "
                       "(default: the chat's default instructions; '' for none)")
    model.add_argument("--user-name", default="User", help="the user's name in transcript mode")
    model.add_argument("--bot-name", default="Assistant", help="the model's name in transcript mode")
    model.add_argument("--cache-dir", help="where hub downloads and converted GGUF models are kept")
    model.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with the model (only for models you trust)")
    train = parser.add_argument_group("training")
    train.add_argument("--full", action="store_true", help="fine-tune every weight instead of a LoRA adapter (needs ~4x the model's size in memory)")
    train.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training part (default %(default)s)")
    train.add_argument("--learning-rate", "--lr", type=float, help=f"step size (default {LORA_LEARNING_RATE:g} for LoRA, {FULL_LEARNING_RATE:g} with --full)")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per step (default %(default)s)")
    train.add_argument("--max-length", type=int, default=defaults.max_length, help="tokens per example; longer answers are cut (default %(default)s)")
    train.add_argument("--seed", type=int, default=defaults.seed, help="random seed for weights init and shuffling (default %(default)s)")
    train.add_argument("--lora-rank", type=int, default=defaults.lora_rank, help="LoRA rank: the adapter's capacity (default %(default)s)")
    train.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha, help="LoRA scaling; the update is scaled by alpha/rank (default %(default)s)")


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    same = {f.name: getattr(args, f.name) for f in fields(TrainOptions) if f.name not in ("prompt_format", "instructions")}
    return TrainOptions(**same, prompt_format=args.format, instructions=read_instructions(args.instructions))


def run_train(args: argparse.Namespace) -> int:
    result = train(options_from_args(args))
    kind = "LoRA adapter" if not args.full else "model"
    print(f"Eval loss {result.eval_before:.3f} before, {result.eval_losses[-1]:.3f} after training ({result.seconds:.0f} s).")
    print(f"Saved the {kind}, report and loss curve to {result.out}")
    print(f"Chat with it:  python -m chat --model {result.out}   or   python app.py --model {result.out}")
    return 0


def train(options: TrainOptions, say: Callable[[str], None] = print) -> TrainResult:
    """Reads the data, trains, saves the adapter or model with a report into `options.out`."""
    with warnings.catch_warnings():  # peft reads a property transformers deprecated: noise for users
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return _train(options, say)


def _train(options: TrainOptions, say: Callable[[str], None]) -> TrainResult:
    started = time.perf_counter()
    out = Path(options.out).expanduser()
    _check(options, out)
    data = load_training_data(options.data)  # before the model: a typo in the file costs no load time
    say(f"Read {len(data.train)} training and {len(data.eval)} evaluation examples from {data.source}")
    loaded, encoder = _load(options, say)
    train_set, eval_set = [encoder(e) for e in data.train], [encoder(e) for e in data.eval]
    model = _prepare_model(loaded.model, options, say)
    result = TrainResult(
        out=out, base_model=base_model_name(options.model), device=loaded.device, counts=count_examples(train_set, eval_set),
        trainable=_parameter_counts(model), eval_before=0.0,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Everything is written into a fresh sibling folder, swapped in at the end: an interrupted
    # run leaves no half-written model where a working one was.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        trainer = _trainer(model, loaded.tokenizer, train_set, eval_set, options, staging, result, say)
        result.eval_before = trainer.evaluate()["eval_loss"]
        say(f"Eval loss before training: {result.eval_before:.3f}")
        trainer.train()
        result.seconds = time.perf_counter() - started
        _save(model, loaded.tokenizer, options, result, staging)
        _remember(result.out, say)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def base_model_name(model: str | None) -> str:
    """What the saved folder records as its base: the user's --model (absolute if a local path)."""
    if model is None:
        return EMBEDDED_BASE
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _check(options: TrainOptions, out: Path) -> None:
    limits = {"epochs": options.epochs, "batch-size": options.batch_size, "lora-rank": options.lora_rank, "lora-alpha": options.lora_alpha}
    for name, value in limits.items():
        if value < 1:
            raise TrainingError(f"--{name} must be at least 1, got {value}")
    if options.max_length < 8:
        raise TrainingError(f"--max-length must be at least 8 tokens, got {options.max_length}")
    if options.learning_rate is not None and not 0 < options.learning_rate < 1:
        raise TrainingError(f"--learning-rate must be between 0 and 1, got {options.learning_rate:g}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INFO_FILE).is_file())):
        raise TrainingError(f"--out {out}: exists and is not an earlier training output; choose a new folder")


def _load(options: TrainOptions, say: Callable[[str], None]) -> tuple[Any, Encoder]:
    import torch

    # Full tuning keeps float32 master weights (mixed precision computes in bf16/fp16 on a GPU).
    dtype = "float32" if options.dtype == "auto" and (options.full or not torch.cuda.is_available()) else options.dtype
    load = LoadOptions(model=options.model, quantize="none", dtype=dtype, cache_dir=options.cache_dir, trust_remote_code=options.trust_remote_code)
    loaded = load_model(load, say)
    if type(loaded.model).__name__.startswith("Peft"):
        raise TrainingError(f"--model {options.model} is a LoRA adapter: train on its base model, or on a --full model folder")
    prompt_format = choose_format(loaded.tokenizer, options.prompt_format, options.user_name, options.bot_name)
    instructions = options.instructions if options.instructions is not None else default_instructions(prompt_format)
    return loaded, Encoder(prompt_format, loaded.tokenizer, instructions, options.max_length)


def _prepare_model(model: Any, options: TrainOptions, say: Callable[[str], None]) -> Any:
    from transformers import set_seed

    set_seed(options.seed)  # the LoRA weights' initial values come from it
    if options.full:
        say("Training every weight (--full)")
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=options.lora_rank, lora_alpha=options.lora_alpha, lora_dropout=0.05,
        target_modules="all-linear",  # attention and MLP projections: the usual best quality per weight
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    trained, total = _parameter_counts(model)
    say(f"Training a LoRA adapter (rank {options.lora_rank}): {trained:,} of {total:,} parameters")
    return model


def _trainer(model, tokenizer, train_set, eval_set, options: TrainOptions, staging: Path, result: TrainResult, say) -> Any:
    import torch
    from transformers import DataCollatorForSeq2Seq, ProgressCallback, Trainer, TrainingArguments

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    arguments = TrainingArguments(
        output_dir=str(staging),  # no checkpoints are written (save_strategy "no"); we save once, at the end
        num_train_epochs=options.epochs, learning_rate=options.rate, weight_decay=0.0,
        per_device_train_batch_size=options.batch_size, per_device_eval_batch_size=options.batch_size,
        eval_strategy="epoch", logging_strategy="epoch", save_strategy="no", report_to="none",
        seed=options.seed, data_seed=options.seed, use_cpu=not cuda, bf16=bf16, fp16=cuda and not bf16,
        disable_tqdm=False, remove_unused_columns=False,
    )
    padder = copy.deepcopy(tokenizer)  # padding settings for training only; the saved tokenizer stays as it was
    padder.padding_side = "right"
    if padder.pad_token is None:
        padder.pad_token = padder.eos_token  # padding is masked out of attention and loss: any id will do
    trainer = Trainer(
        model=model, args=arguments, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=DataCollatorForSeq2Seq(padder, padding=True, label_pad_token_id=-100),
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_epoch_progress(options.epochs, result, say))
    return trainer


def _epoch_progress(epochs: int, result: TrainResult, say: Callable[[str], None]) -> Any:
    from transformers import ProgressCallback

    class EpochProgress(ProgressCallback):
        """Trainer's progress bar, with one readable line per epoch instead of raw log dicts."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                result.train_losses.append(float(logs["loss"]))
            if "eval_loss" in logs and state.global_step > 0:
                result.eval_losses.append(float(logs["eval_loss"]))
                train = f"train loss {result.train_losses[-1]:.3f} · " if result.train_losses else ""
                line = f"epoch {len(result.eval_losses)}/{epochs}: {train}eval loss {logs['eval_loss']:.3f}"
                self.training_bar.write(line) if self.training_bar is not None else say(line)

    return EpochProgress()


def _save(model: Any, tokenizer: Any, options: TrainOptions, result: TrainResult, staging: Path) -> None:
    try:
        if not options.full:
            model.peft_config["default"].base_model_name_or_path = result.base_model  # chat.local.loader reads it
        # (save_embedding_layers=False: LoRA never trains them; "auto" would look the base up on the hub)
        model.save_pretrained(staging, **({} if options.full else {"save_embedding_layers": False}))
        tokenizer.save_pretrained(staging)
        info = {"base_model": result.base_model, "options": asdict(options), "result": asdict(result)}
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        _write_report(staging, options, result)
        if result.out.exists():
            shutil.rmtree(result.out)  # an earlier training output (checked before training)
        staging.rename(result.out)
    except OSError as error:
        raise TrainingError(f"could not save to {result.out}: {error}") from None


def _remember(out: Path, say: Callable[[str], None]) -> None:
    """Lists the saved output in the app's models from now on (the page's Models section, /models in the terminal).
    A data folder that can't be written costs only that: the output is saved, and `--model` still loads it."""
    try:
        remember_trained(out)
    except OSError as error:
        say(f"Note: the app won't list {out} by itself ({error.strerror or error}); give it with --model {out}")


def _parameter_counts(model: Any) -> tuple[int, int]:
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def _write_report(folder: Path, options: TrainOptions, result: TrainResult) -> None:
    (folder / REPORT_FILE).write_text(report_text(options, result), encoding="utf-8")
    _plot_losses(folder / PLOT_FILE, result)


def report_text(options: TrainOptions, result: TrainResult) -> str:
    """The run in a few lines of Markdown: data, settings, losses per epoch, time."""
    counts, (trained, total) = result.counts, result.trainable
    method = "full fine-tuning" if options.full else f"LoRA adapter (rank {options.lora_rank}, alpha {options.lora_alpha})"
    rows = [f"| {n} | {t:.4f} | {e:.4f} |" for n, (t, e) in enumerate(zip(result.train_losses, result.eval_losses), 1)]
    return "\n".join([
        "# Training report", "",
        f"- Data: `{options.data}`: {counts['train_examples']} training examples ({counts['train_answer_tokens']} answer tokens), "
        f"{counts['eval_examples']} evaluation examples ({counts['eval_answer_tokens']} answer tokens)",
        f"- Model: {result.base_model}, {method}: {trained:,} of {total:,} parameters trained",
        f"- Settings: {options.epochs} epochs, learning rate {options.rate:g}, batch size {options.batch_size}, "
        f"max length {options.max_length}, seed {options.seed}, system instructions: {_instructions_words(options)}",
        f"- Device: {result.device}; time: {result.seconds:.0f} s (loading, evaluating and training)",
        f"- Eval loss: {result.eval_before:.4f} before training, {result.eval_losses[-1]:.4f} after", "",
        "| epoch | train loss | eval loss |", "|---:|---:|---:|", f"| 0 | | {result.eval_before:.4f} |", *rows, "",
        f"![loss curve]({PLOT_FILE})", "",
        f"Chat with it: `python -m chat --model {result.out}` or `python app.py --model {result.out}`", "",
    ])


def _instructions_words(options: TrainOptions) -> str:
    if options.instructions is None:
        return "the chat's default (chat with the default to match)"
    return repr(options.instructions[:60]) if options.instructions else "none"


def _plot_losses(path: Path, result: TrainResult) -> None:
    from matplotlib.figure import Figure  # not pyplot: no global backend, no window

    figure = Figure(figsize=(6, 4), dpi=100, layout="tight")
    axes = figure.subplots()
    axes.plot(range(len(result.eval_losses) + 1), [result.eval_before, *result.eval_losses], marker="o", label="eval loss")
    axes.plot(range(1, len(result.train_losses) + 1), result.train_losses, marker="o", label="train loss (epoch mean)")
    axes.set(xlabel="epoch", ylabel="loss on answer tokens", title=f"Training {result.out.name}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path)
