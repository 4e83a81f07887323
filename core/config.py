"""Settings from environment variables (the configuration contract in README.md), parsed and checked
at start: a value the app cannot use is refused with a message that names the variable, shows its
value (API keys never, URLs without their credentials) and says what it accepts (ConfigError,
every problem at once).

Beyond the contract's table, for a speech-to-text server (STT_ENGINE=openai-api):
  STT_BASE_URL   its OpenAI-compatible base URL (.../v1) serving /v1/audio/transcriptions;
                 default OPENAI_BASE_URL
  STT_API_KEY    its API key; default OPENAI_API_KEY
  WHISPER_MODEL  then names the server's model (e.g. openai/whisper-large-v3-turbo, whisper-1);
                 unset: the server's only Whisper model, else whisper-1

An empty value, or one of spaces only, is the same as unset: the default.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import unicodedata
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

from core.errors import AppError
from core.limits import MAX_RECORDING_S

CUDA_LLAVA_MODEL = "llava-hf/llava-1.5-7b-hf"
CPU_LLAVA_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
STT_ENGINES = ("faster-whisper", "openai-whisper", "openai-api")
TTS_ENGINES = ("gtts", "piper", "espeak", "none")
# 4bit: HQQ 4-bit + gemlite kernels, compiled (the fast path, bench/gpu_turn.py); nf4: bitsandbytes NF4
# with fp16 compute (the original script's setting); 8bit: bitsandbytes int8; int8: torch's dynamic int8
# on the CPU (its default); none: fp16 (CUDA) / fp32 (CPU)
QUANTS = ("4bit", "nf4", "8bit", "int8", "none")
CUDA_STT_ENGINE = "openai-whisper"  # Whisper through torch: runs with whatever CUDA torch was built for
CPU_STT_ENGINE = "faster-whisper"
CUDA_CACHE_TOKENS = 2048  # static KV cache of the compiled model: prompt + reply; longer talks are trimmed
CACHE_TOKENS_RANGE = (256, 131_072)  # LLAVA_CACHE_TOKENS: no LLaVA-family checkpoint has a longer context
# Whisper sizes by name (openai-whisper's _MODELS; faster-whisper's adds the distil-* ones and takes hub ids)
OPENAI_WHISPER_SIZES = ("tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
                        "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo")
FASTER_WHISPER_SIZES = OPENAI_WHISPER_SIZES + ("distil-large-v2", "distil-medium.en", "distil-small.en",
                                               "distil-large-v3", "distil-large-v3.5")
MAX_NAME_CHARS = 256  # a model name on a server
SHOWN_CHARS = 200  # of a value quoted in a message (a path is seldom longer)
# Hugging Face's repo id rule (huggingface_hub validate_repo_id): [owner/]name, each of letters, digits,
# - _ . (not first or last), at most 96 characters, no "--" or "..", not ending in .git
HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"(?:{HUB_PART}/)?{HUB_PART}")
HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")  # _: container names
API_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an HTTP header's Bearer token can hold

VARIABLES = ("LLAVA_MODEL", "LLAVA_QUANT", "LLAVA_CACHE_TOKENS", "OPENAI_BASE_URL", "OPENAI_API_KEY",
             "LLAVA_REMOTE_MODEL", "STT_ENGINE", "STT_BASE_URL", "STT_API_KEY", "WHISPER_MODEL", "TTS_ENGINE",
             "PIPER_VOICE", "LOG_DIR")
T = TypeVar("T")


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def masked_url(url: str) -> str:
    """A server URL as it may be shown and logged: without user:password (http://user:pw@host/v1
    -> http://host/v1), query or fragment, which can hold credentials. Never raises."""
    try:
        parts = urlsplit(url) if "://" in url else None
    except ValueError:  # e.g. "http://[::1/v1" (Invalid IPv6 URL)
        parts = None
    if parts is None:  # not a URL: still never show what precedes an "@" nor a query
        scheme, _, rest = url.rpartition("://")
        rest = re.split(r"[?#]", rest, maxsplit=1)[0]
        host, slash, path = rest.partition("/")
        return f"{scheme + '://' if scheme else ''}{host.rpartition('@')[2]}{slash}{path}"
    host = parts.netloc.rpartition("@")[2]  # keeps the port and an IPv6 host's brackets as written
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


@dataclass(frozen=True)
class Problem:
    """One variable the app cannot use."""

    variable: str
    message: str  # names the variable and its value (keys masked): what is wrong
    fix: str  # what it accepts, in plain words

    def __str__(self) -> str:
        return f"{self.message} {self.fix}"


class ConfigError(AppError, ValueError):
    """Environment variables the app cannot use, every one of them (the page shows each and stops).
    A ValueError too, as the settings raised before."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        super().__init__(" ".join(str(p) for p in self.problems), "")

    @property
    def variables(self) -> list[str]:
        return [p.variable for p in self.problems]


class _Refused(Exception):
    """A value a parser cannot use: what is wrong with it, and what the variable accepts."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what, self.fix = what, fix


def shown(name: str, value: str) -> str:
    """A variable's value as a message may quote it: keys never, URLs without credentials, long values cut."""
    if name.endswith("_API_KEY"):
        return f"(a key of {len(value)} characters, not shown)"
    if name.endswith("_BASE_URL"):
        value = masked_url(value)
    quoted = repr(value)
    return quoted if len(quoted) <= SHOWN_CHARS else f"{quoted[:SHOWN_CHARS - 4]}…' ({len(value):,} characters)"


def _one_of(allowed: Sequence[str]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in allowed:
            raise _Refused("is not a choice the app knows", f"Set it to one of: {', '.join(allowed)}.")
        return value.lower()

    return parse


def _cache_tokens(value: str) -> int:
    low, high = CACHE_TOKENS_RANGE
    fix = f"Set it to a whole number of tokens from {low} to {high:,} written with the digits 0-9 (e.g. 2048), " \
          "or leave it unset for the default."
    if not re.fullmatch(r"[0-9]+", value):  # not str.isdigit(): "²⁵⁶" and "٢٥٦" are digits to it, not to int()
        raise _Refused("is not a whole number written with the digits 0-9", fix)
    tokens = int(value) if len(value) <= len(str(high)) else high + 1
    if tokens > high:
        raise _Refused(f"is more than {high:,}, the most a LLaVA model's context holds", fix)
    if tokens < low:
        raise _Refused(f"is less than {low}: not even an image and a question fit", fix)
    return tokens


def _base_url(value: str) -> str:
    """An http(s) URL whose host and port a client can connect to."""
    fix = "Set it to the server's base URL, e.g. http://localhost:8000/v1 or https://api.example.com/v1."
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
        raise _Refused("holds a space or a control character", fix)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise _Refused("must start with http:// or https://", fix)
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    port = _host_and_port(netloc, fix)[1]
    if port is not None and not 1 <= port <= 65535:
        raise _Refused(f"has the port {port}, which cannot exist (ports are 1 to 65535)", fix)
    try:
        parts = urlsplit(value)  # the parser the HTTP client uses agrees
        agreed = parts.hostname is not None and parts.port == port
    except ValueError as e:
        raise _Refused(f"cannot be read as a URL ({e})", fix) from e
    if not agreed:
        raise _Refused("cannot be read as a URL", fix)
    return value


def _host_and_port(netloc: str, fix: str) -> tuple[str, int | None]:
    if netloc.startswith("["):  # [IPv6]:port
        host, bracket, after = netloc[1:].partition("]")
        if not bracket:
            raise _Refused(f"has an IPv6 host without its closing bracket ({netloc!r})", fix)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Refused(f"has {host!r} in brackets, which is not an IPv6 address", fix) from None
        port_text = after.removeprefix(":") if after.startswith(":") else None
        if after and port_text is None:
            raise _Refused(f"has {after!r} after its IPv6 host, where only :port may be", fix)
    else:
        host, colon, port_text = netloc.rpartition(":") if ":" in netloc else (netloc, "", None)
        _check_host(host, fix)
    if not port_text:  # "host:" is the default port, as URL parsers read it
        return host, None
    if not re.fullmatch(r"[0-9]{1,6}", port_text):
        raise _Refused(f"has the port {port_text!r}, which is not a number from 1 to 65535", fix)
    return host, int(port_text)


def _check_host(host: str, fix: str) -> None:
    if not host:
        raise _Refused("has no host name", fix)
    try:
        ascii_host = host.encode("idna").decode("ascii")  # a non-ASCII name as DNS spells it
    except UnicodeError:
        raise _Refused(f"has the host {host!r}, which is not a valid host name", fix) from None
    labels = ascii_host.removesuffix(".").split(".")
    if not all(HOST_LABEL.fullmatch(label) for label in labels) or len(ascii_host) > 253:
        raise _Refused(f"has the host {host!r}, which is not a valid host name", fix)
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(ascii_host)
        except ValueError:
            raise _Refused(f"has the host {host!r}, which is not an IPv4 address", fix) from None


def _api_key(value: str) -> str:
    fix = "Set it to the key exactly as the server gave it: visible ASCII characters, no spaces or line breaks."
    if not API_KEY.fullmatch(value):
        where = next(i for i, c in enumerate(value) if not API_KEY.fullmatch(c))
        kind = "a line break" if value[where] in "\r\n" else "a space" if value[where].isspace() else \
            "a non-ASCII character" if ord(value[where]) > 127 else "a control character"
        raise _Refused(f"holds {kind} (character {where + 1}), which cannot be sent in an HTTP header", fix)
    return value


def _server_model(value: str) -> str:
    fix = f"Set it to the model's name as the server lists it at /v1/models (at most {MAX_NAME_CHARS} characters)."
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        raise _Refused("holds a line break or another control character", fix)
    if len(value) > MAX_NAME_CHARS:
        raise _Refused(f"is {len(value):,} characters long", fix)
    return value


def looks_local(value: str) -> bool:
    """A value that names a file or folder on this machine, rather than a Hugging Face id or a size."""
    if value.startswith(("/", ".", "~")):
        return True
    try:
        return Path(value).exists()
    except (OSError, ValueError):  # a name too long for this system, a NUL
        return False


def _path(value: str, fix: str) -> Path:
    """The path a value names (~ expanded), or why it cannot name one."""
    try:
        path = Path(value).expanduser()
        path.exists()  # raises for a name too long, a NUL; ~user of no user raised above
    except RuntimeError as e:  # "~name" of no user
        raise _Refused(f"starts with {value.split('/')[0]!r}, the home folder of a user this machine does not have",
                       fix) from e
    except (OSError, ValueError) as e:
        raise _Refused(f"cannot be used as a path ({e})", fix) from e
    return path


def _hub_id(value: str, fix: str) -> str:
    if not HUB_ID.fullmatch(value) or "--" in value or ".." in value or value.endswith(".git"):
        raise _Refused("is neither a folder on this machine nor a Hugging Face model id (owner/name)", fix)
    return value


def _folder_holding(value: str, required: str, what: str, fix: str) -> str:
    path = _path(value, fix)
    if not path.exists():
        raise _Refused("names a folder that does not exist", fix)
    if not path.is_dir():
        raise _Refused(f"is a file, not a folder holding {what}", fix)
    if not (path / required).is_file():
        raise _Refused(f"is a folder without {required}: not {what}", fix)
    return str(path)


def _llava_model(value: str) -> str:
    fix = ("Set it to a model folder (one holding config.json, as save_pretrained writes it; "
           "`python -m tests.tiny_llava models/tiny-llava` builds a test model) or to a Hugging Face id such as "
           f"{CUDA_LLAVA_MODEL}.")
    if looks_local(value):
        return _folder_holding(value, "config.json", "a saved model", fix)
    return _hub_id(value, fix)


def _whisper_model(engine: str) -> Callable[[str], str]:
    """WHISPER_MODEL as the speech engine reads it: a server's model name, a size, a hub id, a folder or a file."""

    def parse(value: str) -> str:
        if engine == "openai-api":
            return _server_model(value)
        sizes = FASTER_WHISPER_SIZES if engine == "faster-whisper" else OPENAI_WHISPER_SIZES
        if engine == "faster-whisper":
            fix = (f"Set it to a size ({', '.join(sizes)}), a Hugging Face id of a CTranslate2 Whisper "
                   "(owner/name), or a folder holding one (model.bin, config.json).")
            if looks_local(value):
                return _folder_holding(value, "model.bin", "a CTranslate2 Whisper model", fix)
            if value in sizes or ("/" in value and HUB_ID.fullmatch(value) and ".." not in value and "--" not in value):
                return value
            raise _Refused("is not a Whisper size, a Hugging Face id (owner/name) nor a folder on this machine", fix)
        fix = f"Set it to a size ({', '.join(sizes)}) or to an openai-whisper checkpoint file (.pt)."
        if looks_local(value):
            path = _path(value, fix)
            if not path.is_file():
                raise _Refused("is a folder, not a checkpoint file" if path.is_dir() else "names a file that does not exist", fix)
            return str(path)
        if value not in sizes:
            raise _Refused("is not a Whisper size openai-whisper knows", fix)
        return value

    return parse


def _log_dir(value: str) -> Path:
    fix = "Set it to a folder the app can write to (it is made if missing)."
    path = _path(value, fix)
    if path.exists() and not path.is_dir():
        raise _Refused("is a file, not a folder", fix)
    ancestor = next((p for p in path.absolute().parents if p.exists()), None)
    if not path.exists() and ancestor is not None and not ancestor.is_dir():
        raise _Refused(f"cannot be made: {ancestor} is a file", fix)
    nearest = path if path.exists() else ancestor
    if nearest is not None and not os.access(nearest, os.W_OK | os.X_OK):
        raise _Refused(f"cannot be written by this user ({nearest})", fix)
    return path


def _piper_voice(value: str) -> Path:
    fix = ("Set it to a Piper voice's .onnx file with its .onnx.json beside it, both as downloaded "
           "(e.g. en_GB-alan-medium.onnx and en_GB-alan-medium.onnx.json from huggingface.co/rhasspy/piper-voices).")
    path = _path(value, fix)
    if path.is_dir():
        raise _Refused("is a folder, not a voice file", fix)
    if not path.is_file():
        raise _Refused("is not a file", fix)
    config = Path(f"{path}.json")
    if not config.is_file():
        raise _Refused(f"has no {config.name} beside it: Piper needs the voice's configuration", fix)
    try:
        data = json.loads(config.read_bytes())
    except (OSError, ValueError) as e:
        raise _Refused(f"has {config.name} beside it, but it is not readable JSON ({e})", fix) from e
    if wrong := piper_config_problem(data):
        raise _Refused(f"has {config.name} beside it, but Piper cannot read it: {wrong}", fix)
    return path


# What Piper (piper.config.PiperConfig.from_dict) and the app (core.engines.tts) read from a voice's .onnx.json:
# (keys, type, required). A number may be an int where a float is read; a bool is never a number.
PIPER_FIELDS: tuple[tuple[tuple[str, ...], type | tuple[type, ...], bool], ...] = (
    (("num_symbols",), int, True),
    (("num_speakers",), int, True),
    (("audio",), dict, True),
    (("audio", "sample_rate"), int, True),
    (("espeak",), dict, True),
    (("espeak", "voice"), str, True),
    (("phoneme_id_map",), dict, True),
    (("phoneme_type",), str, False),
    (("inference",), dict, False),
    (("inference", "noise_scale"), (int, float), False),
    (("inference", "length_scale"), (int, float), False),
    (("inference", "noise_w"), (int, float), False),
    (("speaker_id_map",), dict, False),
    (("hop_length",), int, False),
    (("default_speaker_id",), int, False),
    (("vowel_clusters",), list, False),
    (("piper_version",), str, False),
    (("language",), dict, False),
    (("language", "family"), str, False),
    (("language", "name_english"), str, False),
)
JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a whole number", float: "a number",
              bool: "true or false", type(None): "null"}


def piper_config_problem(data: object) -> str:
    """What is wrong with a Piper voice configuration, in plain words ("" when nothing is)."""
    if not isinstance(data, dict):
        return f"it holds {_json_type(data)}, where Piper's format has an object ({{\"audio\": …, \"espeak\": …}})"
    for keys, kind, required in PIPER_FIELDS:
        value, where = data, ""
        for key in keys:
            if not isinstance(value, dict):
                break  # its parent has the wrong type: said already
            if key not in value:
                if required:
                    return f"it lacks {'.'.join(keys)!r}"
                break
            value, where = value[key], ".".join(keys)
        else:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            if isinstance(value, bool) or not isinstance(value, kinds):
                return (f"{where!r} is {_json_type(value)} ({_short_json(value)}), where Piper's format has "
                        f"{JSON_TYPES[kinds[0]]}")
    ids = data["phoneme_id_map"]
    if not all(isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v) for v in ids.values()):
        return "'phoneme_id_map' must map each phoneme to a list of whole numbers"
    if data["audio"]["sample_rate"] <= 0 or data["num_symbols"] <= 0:
        return "'audio.sample_rate' and 'num_symbols' must be more than 0"
    return ""


def _json_type(value: object) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def _short_json(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:39] + "…"


class _Reader:
    """Reads the variables one by one, collecting every problem."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[Problem] = []

    def raw(self, name: str) -> str | None:
        return self.env.get(name, "").strip() or None  # empty or spaces: unset

    def get(self, name: str, parse: Callable[[str], T], default: T | None = None) -> T | None:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except _Refused as e:
            self.problems.append(Problem(name, f"{name}={shown(name, value)} {e.what}.", e.fix))
            return default


@dataclass(frozen=True)
class Settings:
    llava_model: str  # Hugging Face id or local folder of a LLaVA-family model
    llava_quant: str  # "4bit", "8bit" or "none"
    device: str  # "cuda" or "cpu"
    openai_base_url: str | None  # OpenAI-compatible server instead of the in-process model
    openai_api_key: str | None
    llava_remote_model: str | None  # model name on that server
    stt_engine: str  # "faster-whisper", "openai-whisper" or "openai-api" (a transcription server)
    whisper_model: str | None  # size name or local path (openai-api: the server's model); None: pick
    tts_engine: str  # "gtts" (falls back to Piper, then espeak-ng), "piper" (espeak-ng beside it), "espeak" or "none"
    log_dir: Path  # session logs and their media files
    stt_base_url: str | None = None  # transcription server for STT_ENGINE=openai-api
    stt_api_key: str | None = None
    max_image_pixels: int = 40_000_000  # 40 megapixels; bigger uploads are refused
    max_image_bytes: int = 25 * 1024 * 1024  # 25 MiB, also .streamlit/config.toml maxUploadSize
    max_audio_seconds: float = MAX_RECORDING_S  # longer recordings are refused (core.limits)
    token_timeout_s: float = 300.0  # longest wait for one generated chunk
    llava_cache_tokens: int | None = None  # LLAVA_CACHE_TOKENS: KV cache length on CUDA; None: the model's context
    piper_voice: Path | None = None  # PIPER_VOICE: a Piper voice's .onnx (its .onnx.json beside it); None: the bundled one

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings, or ConfigError naming every variable that cannot be used. From os.environ
        (env None), settings once found good are kept for the same values: every page run asks, and
        a log folder or a voice that goes wrong later is the running app's business (it says so)."""
        if env is None:
            return _from_environ(tuple((name, os.environ.get(name)) for name in VARIABLES), cuda_available())
        return cls._parse(env)

    @classmethod
    def _parse(cls, env: Mapping[str, str]) -> "Settings":
        cuda = cuda_available()
        read = _Reader(env)
        quant = read.get("LLAVA_QUANT", _one_of(QUANTS), "4bit" if cuda else "int8")
        stt = read.get("STT_ENGINE", _one_of(STT_ENGINES), CUDA_STT_ENGINE if cuda else CPU_STT_ENGINE)
        tts = read.get("TTS_ENGINE", _one_of(TTS_ENGINES), "gtts")
        base_url, stt_base_url = read.get("OPENAI_BASE_URL", _base_url), read.get("STT_BASE_URL", _base_url)
        api_key = read.get("OPENAI_API_KEY", _api_key)
        settings = dict(
            llava_model=read.get("LLAVA_MODEL", _llava_model, CUDA_LLAVA_MODEL if cuda else CPU_LLAVA_MODEL),
            llava_quant=quant,
            device="cuda" if cuda else "cpu",
            openai_base_url=base_url,
            openai_api_key=api_key,
            llava_remote_model=read.get("LLAVA_REMOTE_MODEL", _server_model),
            stt_engine=stt,
            whisper_model=read.get("WHISPER_MODEL", _whisper_model(stt)),
            tts_engine=tts,
            log_dir=read.get("LOG_DIR", _log_dir, Path("logs")),
            stt_base_url=(stt_base_url or base_url) if stt == "openai-api" else stt_base_url,
            stt_api_key=read.get("STT_API_KEY", _api_key, api_key),
            llava_cache_tokens=read.get("LLAVA_CACHE_TOKENS", _cache_tokens, CUDA_CACHE_TOKENS if cuda else None),
            piper_voice=read.get("PIPER_VOICE", _piper_voice),
        )
        if stt == "openai-api" and not (read.raw("STT_BASE_URL") or read.raw("OPENAI_BASE_URL")):
            read.problems.append(Problem("STT_BASE_URL", "STT_ENGINE='openai-api' needs STT_BASE_URL (or "
                                         "OPENAI_BASE_URL): the transcription server.",
                                         "Set it to the server's base URL, e.g. http://localhost:8000/v1."))
        if read.problems:
            raise ConfigError(read.problems)
        return cls(**settings)

    def as_rows(self) -> list[tuple[str, str]]:
        """(name, value) pairs for a read-only display; API keys are masked, URLs shown without credentials."""
        rows = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("api_key") and value:
                value = "set"
            elif f.name.endswith("base_url") and value:
                value = masked_url(value)
            rows.append((f.name, "" if value is None else str(value)))
        return rows


@lru_cache(maxsize=8)
def _from_environ(values: tuple[tuple[str, str | None], ...], cuda: bool) -> Settings:
    """Settings found good, kept per set of values (a ConfigError is not kept: the next run checks again)."""
    return Settings._parse({name: value for name, value in values if value is not None})
