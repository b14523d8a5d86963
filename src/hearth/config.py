"""Hearth's settings: one validated object and its sections, with the defaults and limits of
every key. Where the values come from (file < environment < flags) is `hearth.settings_layers`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import re2
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hearth.budget import Budget

BUNDLED_MODEL_NAME = "gemma-3-270m"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hearth"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hearth"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class EngineSettings(_Strict):
    """How Hearth runs its local llama.cpp engines."""

    parallel: int = Field(8, ge=1, le=256, description="Parallel slots (concurrent sequences).")
    ctx_size: int = Field(
        16384, ge=256, description="Context tokens shared by all slots (each gets ctx/parallel)."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads; default: llama.cpp's own.")
    gpu_layers: int | None = Field(None, ge=-1, description="Layers to offload to a GPU.")
    startup_timeout: float = Field(180.0, gt=0, description="Seconds to wait for a model load.")
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds between SIGTERM and SIGKILL.")
    restart_backoff_max: float = Field(30.0, gt=0, description="Longest wait between restarts.")
    extra_args: list[str] = Field(default_factory=list, description="Extra llama-server flags.")


_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float) -> float:
    """'5m' → 300.0, '30s' → 30.0, 90 → 90.0; a negative value means "forever"."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration; use seconds or a number with ms, s, m or h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]

_RPC_ENDPOINT = re.compile(r"^([A-Za-z0-9_.-]+):(\d{1,5})$")


def parse_rpc_endpoint(value: str) -> str:
    """'10.0.0.2:50052' as it is; a scheme, a missing or out-of-range port, or an IPv6 address
    is an error (llama.cpp's RPC client splits at the first ':' and speaks only plain TCP)."""
    text = value.strip()
    if "://" in text:
        raise ValueError(
            f"{value!r}: an RPC worker is host:port with no scheme, e.g. 10.0.0.2:50052"
        )
    match = _RPC_ENDPOINT.match(text)
    if not match:
        raise ValueError(
            f"{value!r} is not host:port (e.g. 10.0.0.2:50052 or worker1:50052; IPv6 addresses "
            "are not supported by llama.cpp's RPC client: use a host name)"
        )
    if not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"{value!r}: the port must be 1 to 65535")
    return text


RpcEndpoint = Annotated[str, AfterValidator(parse_rpc_endpoint)]

# LoRA adapters of a llama.cpp model (docs/models.md, "Adapters (LoRA)"): served as `model+name`.
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ADAPTER_NAME_RULE = "1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"


def _adapter_files(value: dict[str, str]) -> dict[str, str]:
    for name, file in value.items():
        if not ADAPTER_NAME.match(name):
            raise ValueError(f"{name!r} cannot name an adapter: use {ADAPTER_NAME_RULE}")
        if not file.strip() or "," in file:
            # llama-server reads --lora as a comma-separated list.
            raise ValueError(f"adapters.{name}: give the path of a LoRA GGUF file without commas")
    return value


AdapterFiles = Annotated[dict[str, str], AfterValidator(_adapter_files)]


class Price(_Strict):
    """What a deployment's tokens cost, per million; for local models an amortised figure."""

    input: float = Field(0.0, ge=0, description="Price per million prompt tokens.")
    output: float = Field(0.0, ge=0, description="Price per million completion tokens.")
    audio_minute: float = Field(
        0.0, ge=0, description="Price per minute of audio transcribed or translated."
    )

    def of(self, prompt_tokens: int, completion_tokens: int, audio_seconds: float = 0.0) -> float:
        tokens = (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000
        return tokens + audio_seconds * self.audio_minute / 60


Capability = Literal["chat", "completion", "embeddings", "rerank", "transcription", "vision"]


class DeploymentTimeouts(_Strict):
    connect: Duration = Field(5.0, gt=0, description="Time to open a connection.")
    first_token: Duration = Field(
        60.0, gt=0, description="Time to the first byte of the answer (and between chunks)."
    )
    total: Duration = Field(600.0, gt=0, description="Time for the whole answer.")


class DeploymentSettings(_Strict):
    """An upstream Hearth does not run: any server that speaks the OpenAI protocol."""

    url: str = Field(
        pattern=r"^https?://[^\s/]+",
        description="Base URL of its OpenAI API, e.g. http://gpu-box:8000/v1.",
    )
    model: str | None = Field(None, description="Its name for the model; default: the key.")
    api_key: str | None = Field(
        None, description="Where the key is: 'env:NAME' or 'file:PATH' (never logged)."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    timeouts: DeploymentTimeouts = Field(default_factory=DeploymentTimeouts)
    max_concurrency: int | None = Field(
        None, ge=1, description="Requests in flight at once; past it, routes try the next one."
    )
    price: Price = Field(default_factory=Price)
    capabilities: list[Capability] = Field(
        default_factory=lambda: list[Capability](("chat", "completion")),
        description="What it serves: chat, completion, embeddings, rerank, transcription (its "
        "/audio/transcriptions, sent multipart) (and vision: its model reads images, shown in "
        "model listings).",
    )
    aliases: list[str] = Field(default_factory=list, description="Other names clients may use.")
    import_models: bool = Field(
        False, description="Also serve every model its /models lists, as '<key>/<model id>'."
    )
    health_check: bool = Field(True, description="Probe its /models in the background.")


class RouteTarget(_Strict):
    deployment: str
    weight: float = Field(1.0, ge=0, description="Share of traffic under 'weighted'.")


Strategy = Literal[
    "priority", "weighted", "least-busy", "lowest-latency", "lowest-cost", "cascade"
]  # fmt: skip


# Task-aware routes (docs/routing.md, "Task-aware routes"): rules and the semantic classifier.
_CLASS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # shown in a header and a metric label
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
MAX_PATTERN_LENGTH = 2048


def _linear_pattern(value: str) -> str:
    """A regular expression RE2 accepts: matched in time linear in the text (no backtracking),
    so no request can make a rule slow. Back-references and look-arounds are refused here."""
    if len(value) > MAX_PATTERN_LENGTH:
        raise ValueError(f"a pattern may be at most {MAX_PATTERN_LENGTH} characters")
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(value, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"{value!r} is not a regular expression Hearth can match in linear time (RE2 "
            f"syntax; no back-references or look-arounds): {reason}"
        ) from None
    return value


def _names(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _header_values(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    headers: dict[Any, Any] = {}
    for name, wanted in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not an HTTP header name")
        headers[name.lower()] = [wanted] if isinstance(wanted, str) else wanted
    return headers


LinearPattern = Annotated[str, AfterValidator(_linear_pattern)]
Names = Annotated[list[str], BeforeValidator(_names), Field(min_length=1)]
HeaderValues = Annotated[dict[str, list[str]], BeforeValidator(_header_values)]
Example = Annotated[str, Field(min_length=1, max_length=4096)]
Examples = Annotated[list[Example], Field(min_length=1, max_length=256)]

RULE_CONDITIONS = (
    "tools",
    "images",
    "audio",
    "json_schema",
    "prompt_tokens_over",
    "message_matches",
    "system_matches",
    "key",
    "team",
    "header",
    "class_",
)


class RouteRule(_Strict):
    """One rule of a route: when every condition it sets holds, the request goes to `to`."""

    model_config = ConfigDict(populate_by_name=True)

    to: str = Field(
        min_length=1, description="A deployment or local model, or another route's name."
    )
    tools: bool | None = Field(None, description="The request carries tools (false: none).")
    images: bool | None = Field(None, description="A message carries an image.")
    audio: bool | None = Field(None, description="A message carries audio.")
    json_schema: bool | None = Field(
        None, description="It asks for JSON (response_format json_schema or json_object)."
    )
    prompt_tokens_over: int | None = Field(
        None, ge=0, description="Its prompt is longer than this many tokens."
    )
    message_matches: LinearPattern | None = Field(
        None, description="Any message's text matches this regular expression (RE2)."
    )
    system_matches: LinearPattern | None = Field(
        None, description="The system (or developer) prompt matches this regular expression."
    )
    key: Names | None = Field(None, description="Sent with one of these keys (name or id).")
    team: Names | None = Field(None, description="Sent with a key of one of these teams.")
    header: HeaderValues | None = Field(
        None, description="Request headers and the values (any of a list) they must have."
    )
    class_: str | None = Field(
        None, alias="class", description="The route's classifier gives the request this class."
    )

    @model_validator(mode="after")
    def _has_a_condition(self) -> RouteRule:
        if all(getattr(self, name) is None for name in RULE_CONDITIONS):
            conditions = ", ".join("class" if c == "class_" else c for c in RULE_CONDITIONS)
            raise ValueError(f"a rule needs at least one condition besides 'to': {conditions}")
        return self


class ClassifierSettings(_Strict):
    """Classes defined by example prompts, told apart by an embeddings model Hearth serves."""

    model: str = Field(
        min_length=1, description="The embeddings model (a local one, a deployment or a route)."
    )
    classes: dict[str, Examples] = Field(
        min_length=1, description="Class name: a few example prompts of that class."
    )
    min_similarity: float = Field(
        0.0, ge=-1, le=1, description="Below this cosine similarity to every example: no class."
    )

    @field_validator("classes")
    @classmethod
    def _class_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name in value:
            if not _CLASS_NAME.match(name):
                raise ValueError(f"{name!r}: a class name is 1 to 64 of A-Z a-z 0-9 _ . -")
        return value


class CascadeSettings(_Strict):
    """What a `cascade` route checks before it keeps an answer; a failed check sends the request
    on to the next deployment (docs/routing.md, "Cascades")."""

    non_empty: bool = Field(True, description="Reject an answer with no text and no tool call.")
    not_truncated: bool = Field(True, description="Reject an answer cut off by max_tokens.")
    valid_json: bool = Field(
        True, description="Reject invalid JSON, or JSON against the schema, when JSON was asked."
    )
    tool_arguments: bool = Field(
        True, description="Reject tool calls to unknown tools or with arguments off their schema."
    )
    min_logprob: float | None = Field(
        None, le=0, description="Reject answers whose mean token log-probability is lower."
    )
    pattern: LinearPattern | None = Field(
        None, description="Reject answers whose text does not match (RE2 syntax)."
    )
    buffer_streams: bool = Field(
        False,
        description="Check streamed requests too, by sending the answer once it is accepted "
        "(the client waits for the whole answer); otherwise streams take the first deployment.",
    )


class RouteSettings(_Strict):
    """A public model name served by one or more deployments (local models or remote ones)."""

    deployments: list[str | RouteTarget] = Field(
        min_length=1, description="Deployments or local models, in priority order."
    )
    strategy: Strategy = "priority"
    aliases: list[str] = Field(default_factory=list, description="Other names clients may use.")
    rules: list[RouteRule] = Field(
        default_factory=list, max_length=64, description="Checked in order; the first that holds."
    )
    classifier: ClassifierSettings | None = None
    cascade: CascadeSettings | None = Field(
        None, description="The checks of strategy 'cascade' (default: all but logprob, pattern)."
    )

    @model_validator(mode="after")
    def _classes_defined(self) -> RouteSettings:
        known = set(self.classifier.classes) if self.classifier is not None else set()
        for index, rule in enumerate(self.rules):
            if rule.class_ is not None and rule.class_ not in known:
                where = f"rules.{index}.class"
                if not known:
                    raise ValueError(f"{where}: '{rule.class_}' needs a 'classifier' on the route")
                raise ValueError(
                    f"{where}: '{rule.class_}' is not a class of the route's classifier; "
                    f"its classes: {', '.join(sorted(known))}"
                )
        return self

    def targets(self) -> list[RouteTarget]:
        return [
            RouteTarget(deployment=item) if isinstance(item, str) else item
            for item in self.deployments
        ]


class BreakerSettings(_Strict):
    failures: int = Field(5, ge=1, description="Failures within the window that open it.")
    window: Duration = Field(60.0, gt=0, description="Seconds over which failures count.")
    cooldown: Duration = Field(30.0, gt=0, description="Seconds open before a trial request.")


class RoutingSettings(_Strict):
    retries: int = Field(
        2, ge=0, description="Retries of one deployment before falling back to the next."
    )
    backoff: Duration = Field(0.25, ge=0, description="First retry delay; doubles, with jitter.")
    backoff_max: Duration = Field(8.0, ge=0, description="Longest retry delay.")
    health_check_interval: Duration = Field(
        30.0, ge=0, description="Seconds between probes of remote deployments (0: off)."
    )
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    max_choices: int = Field(
        8, ge=1, le=128, description="Most choices (`n`) one chat or completion request may ask."
    )


class ImageSettings(_Strict):
    """Images a request names by http(s) URL, which Hearth fetches for engines that take only the
    image itself (upstream/images.py); data: URLs are checked against the same limits."""

    max_bytes: ByteSize = Field(
        ByteSize(20 * 1024**2), ge=1, description="Largest image, fetched or inline."
    )
    fetch_timeout: Duration = Field(
        10.0, gt=0, description="Seconds one image may take to fetch, redirects included."
    )
    max_redirects: int = Field(3, ge=0, le=10, description="Redirects followed, each re-checked.")
    allow_private: bool = Field(
        False,
        description="Fetch from loopback, private, link-local and other non-public addresses too "
        "(off: a request cannot make Hearth reach into the network it runs in).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names fetched even when they resolve to a non-public address (an "
        "intranet image server).",
    )
    cache_entries: int = Field(64, ge=0, description="Fetched images kept in memory (LRU).")
    cache_bytes: ByteSize = Field(
        ByteSize(64 * 1024**2), ge=0, description="Memory the cached images may take."
    )


class AudioSettings(_Strict):
    """Audio uploaded for transcription (/v1/audio/transcriptions, /v1/audio/translations):
    decoded at the gateway and sent to the engine as 16 kHz mono WAV."""

    max_bytes: ByteSize = Field(
        ByteSize(25 * 1024**2), ge=1, description="Largest audio file one request may upload."
    )
    max_seconds: Duration = Field(
        1800.0, gt=0, description="Longest audio one request may send, in seconds."
    )


class CacheSettings(_Strict):
    """Exact-match cache of answers to deterministic requests (temperature 0 or a seed)."""

    enabled: bool = False
    ttl: Duration = Field(3600.0, gt=0, description="Seconds an answer stays cached.")
    max_entries: int = Field(1024, ge=1, description="Answers kept in memory (LRU).")
    max_entry_bytes: ByteSize = Field(
        ByteSize(1024 * 1024), ge=1, description="Larger answers are not cached."
    )


Task = Literal["chat", "embeddings", "rerank", "transcription"]


def _split_command(value: Any) -> Any:
    """A command line given as one string is split as a POSIX shell would (no shell runs it)."""
    return shlex.split(value) if isinstance(value, str) else value


CommandLine = Annotated[list[str], BeforeValidator(_split_command)]


_RAY_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables Hearth sets from a setting of their own.
_VLLM_ENV_SETTINGS = {
    "RAY_ADDRESS": "ray_address",
    "VLLM_HOST_IP": "host_ip",
    "NCCL_SOCKET_IFNAME": "network_interface",
    "GLOO_SOCKET_IFNAME": "network_interface",
}


class VLLMSettings(_Strict):
    """How `vllm serve` runs one model (see docs/engines.md)."""

    tensor_parallel_size: int | None = Field(None, ge=1, description="GPUs to shard over.")
    pipeline_parallel_size: int | None = Field(None, ge=1, description="Pipeline stages.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Share of each GPU's memory vLLM may take (its default 0.9)."
    )
    max_model_len: int | None = Field(None, ge=16, description="Context length; default: model's.")
    quantization: str | None = Field(None, description="e.g. awq, gptq, fp8; default: detected.")
    lora_modules: dict[str, str] = Field(
        default_factory=dict, description="LoRA adapters by name: {name: path}."
    )
    max_lora_rank: int | None = Field(None, ge=1)
    extra_args: list[str] = Field(default_factory=list, description="Extra `vllm serve` flags.")
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        None,
        description="mp: processes on this node; ray: a Ray cluster, the way across nodes "
        "(tensor_parallel_size x pipeline_parallel_size GPUs); default: vLLM's choice.",
    )
    ray_address: str | None = Field(
        None,
        description="ray backend: the cluster's address, HOST:PORT of `ray start --head` "
        "(its --port, 6379 by default) or 'auto', given to vLLM as RAY_ADDRESS; this node must "
        "have joined the cluster. Default: the cluster this node joined.",
    )
    host_ip: str | None = Field(
        None,
        description="This node's IP address on the network between the nodes, as Ray knows it "
        "(VLLM_HOST_IP).",
    )
    network_interface: str | None = Field(
        None,
        description="The network interface between the nodes, e.g. eth1 "
        "(NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME).",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment of `vllm serve` (e.g. NCCL_IB_HCA); a value may be "
        "'env:NAME' or 'file:PATH' for a credential (never logged).",
    )

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("distributed_executor_backend") != "ray":
            raise ValueError("a ray_address needs distributed_executor_backend: ray")
        if value.startswith("ray://"):
            # vLLM starts its workers as Ray actors from the serving process itself, which a Ray
            # Client connection cannot do (vllm-project/vllm#14349).
            raise ValueError(
                f"{value!r} is a Ray Client address, which vLLM cannot use; give the cluster's "
                "HOST:PORT (the --port of `ray start --head`, 6379 by default) and run Hearth "
                "on a node that joined the cluster"
            )
        if value != "auto" and not _RAY_ADDRESS.match(value):
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. 10.0.0.1:6379) nor 'auto'")
        return value

    @field_validator("host_ip")
    @classmethod
    def _host_ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)  # its ValueError says what is wrong
        return value

    @field_validator("network_interface")
    @classmethod
    def _network_interface(cls, value: str | None) -> str | None:
        # Gloo takes one interface by its exact name; NCCL's prefix and ^exclusion forms would
        # mean something else to it.
        if value is not None and not _INTERFACE.match(value):
            raise ValueError(f"{value!r} is not a network interface name (e.g. eth1, ib0)")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name in _VLLM_ENV_SETTINGS:
                raise ValueError(f"{name} is set by vllm.{_VLLM_ENV_SETTINGS[name]}; use that")
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


class TracingSettings(_Strict):
    """OpenTelemetry traces over OTLP/HTTP (needs the `otel` extra)."""

    enabled: bool = False
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces", description="The collector's OTLP/HTTP traces URL."
    )
    service_name: str = "hearth"
    sample_ratio: float = Field(1.0, ge=0, le=1, description="Share of new traces recorded.")


class ModelSettings(_Strict):
    """One servable model: which file, under which names, with which engine settings.

    Engine settings left unset fall back to the top-level `engine` section.
    """

    model: str = Field(
        description="The stored model it serves (see `hearth ls`), a path to a .gguf file or to "
        "a Hugging Face model folder (or, for vLLM and MLX, a hub repository id)."
    )
    engine: str | None = Field(
        None,
        description="Which engine serves it: llama.cpp, transformers, vllm, mlx, mlx-vlm, command "
        "(or one an installed package registers); default by format: a .gguf → llama.cpp, a "
        "model folder → transformers (vLLM with an NVIDIA GPU, MLX on Apple silicon, when "
        "installed), an entry with a `command` → command.",
    )
    task: Task | None = Field(
        None,
        description="chat, embeddings, rerank or transcription (a Whisper model folder on "
        "transformers, or a whisper.cpp server as a `command`); default: from the model's "
        "metadata.",
    )
    device: str | None = Field(
        None, description="transformers: cpu, cuda, cuda:1 or mps; default: the best found."
    )
    dtype: str | None = Field(
        None, description="transformers and vLLM: float32, float16, bfloat16; default: auto."
    )
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    aliases: list[str] = Field(default_factory=list, description="Other names clients may use.")
    ctx_size: int | None = Field(None, ge=256)
    parallel: int | None = Field(None, ge=1, le=256)
    threads: int | None = Field(None, ge=1)
    gpu_layers: int | None = Field(None, ge=-1)
    chat_template: str | None = Field(
        None, description="A Jinja chat template file, or a template shipped with Hearth."
    )
    keep_alive: Duration | None = Field(
        None, description="Idle time before unloading (0: after each request; negative: never)."
    )
    max_output_tokens: int | None = Field(
        None, ge=1, description="Most tokens one request may generate (default: the global one)."
    )
    extra_args: list[str] | None = None
    rpc: list[RpcEndpoint] = Field(
        default_factory=list,
        description="llama.cpp: RPC workers (`hearth rpc-worker`) as host:port, which hold part "
        "of the model's layers; without gpu_layers, every layer goes to the workers and GPUs.",
    )
    adapters: AdapterFiles = Field(
        default_factory=dict,
        description="llama.cpp: LoRA adapters as {name: GGUF file}, all loaded with the model; a "
        "request picks one as model 'NAME+ADAPTER' or with its 'adapter' field.",
    )
    mmproj: str | None = Field(
        None,
        description="llama.cpp: a multimodal projector GGUF (mmproj-*.gguf) loaded with the "
        "model, so its chat messages may carry images; default: the one stored with the model "
        "(`hearth pull` fetches it, `hearth import --mmproj` attaches it).",
    )
    command: CommandLine | None = Field(
        None,
        min_length=1,
        description="command engine: the server's command line (a list, or one string split as "
        "a shell would) with {port} (required), {host} and {model} filled in at each start.",
    )
    health_path: str | None = Field(
        None,
        pattern=r"^/",
        description="command engine: the path answering 200 once the server is ready; "
        "default /health (e.g. /v1/models for servers without one).",
    )
    served_model: str | None = Field(
        None,
        description="command engine: the `model` name its server expects in requests; "
        "default: the entry's `model`.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="command engine: extra environment variables."
    )
    memory: ByteSize | None = Field(
        None,
        description="command engine: memory its server takes, e.g. '6GiB', counted against "
        "memory_budget; default 0.",
    )
    price: Price = Field(default_factory=Price, description="Amortised price, for cost reports.")
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Request fields applied when a request leaves them out (e.g. temperature).",
    )
    replicas: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Engine processes serving this model, each with its own slots, counted "
        "against memory_budget and pinned to its own GPU (or its own share of the CPU cores); "
        "default 1. Or min_replicas/max_replicas to scale with the load.",
    )
    min_replicas: int | None = Field(
        None, ge=1, le=64, description="Autoscaling: replicas always running (default 1)."
    )
    max_replicas: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Autoscaling: a replica is added while requests wait for a slot and memory "
        "allows, up to this many; an extra one stops after replica_keep_alive idle.",
    )
    replica_routing: Literal["affinity", "round_robin"] = Field(
        "affinity",
        description="How a request picks a replica: affinity (the one whose cache holds its "
        "prompt prefix, unless it is busy; else the least busy) or round_robin.",
    )
    replica_keep_alive: Duration | None = Field(
        None,
        description="Idle time before an extra replica (above min_replicas) stops; default: the "
        "model's keep_alive when positive, else 5 minutes.",
    )

    @model_validator(mode="after")
    def _transcription_engines(self) -> ModelSettings:
        if self.task != "transcription" or self.command is not None:
            return self
        if self.engine not in (None, "transformers", "command") or (
            self.engine is None and self.model.lower().endswith(".gguf")
        ):
            raise ValueError(
                "task 'transcription' is served by the transformers engine (a Whisper model "
                "folder) or by a whisper.cpp server given as `command`, not by "
                f"{self.engine or 'llama.cpp'}"
            )
        return self

    @model_validator(mode="after")
    def _replica_counts(self) -> ModelSettings:
        if self.replicas is not None and (self.min_replicas or self.max_replicas):
            raise ValueError("set replicas, or min_replicas/max_replicas, not both")
        if self.min_replicas is not None and self.max_replicas is None:
            raise ValueError("min_replicas needs max_replicas (or set replicas)")
        if self.replica_range()[0] > self.replica_range()[1]:
            raise ValueError("min_replicas is more than max_replicas")
        return self

    def replica_range(self) -> tuple[int, int]:
        """(replicas always running, most replicas): (N, N) for `replicas: N`."""
        if self.replicas is not None:
            return self.replicas, self.replicas
        if self.max_replicas is not None:
            return self.min_replicas or 1, self.max_replicas
        return 1, 1

    @field_validator("rpc")
    @classmethod
    def _rpc_needs_llama_cpp(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("engine") not in (None, "llama.cpp"):
            raise ValueError("only the llama.cpp engine splits a model over RPC workers")
        return value

    def engine_settings(self, defaults: EngineSettings) -> EngineSettings:
        """The engine settings for this model: its own values over the top-level ones."""
        own = {
            key: value
            for key in ("ctx_size", "parallel", "threads", "gpu_layers", "extra_args")
            if (value := getattr(self, key)) is not None
        }
        return defaults.model_copy(update=own)


class TeamSettings(_Strict):
    """Limits shared by every key of a team (a key's own limits apply as well)."""

    rpm: int | None = Field(None, ge=1, description="Requests per minute, all keys together.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute, all keys together.")
    budget: str | None = Field(
        None, description="'AMOUNT/PERIOD': '100000tokens/day', '25usd/month' (or '$25/month')."
    )

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        return None if value is None else str(Budget.parse(value))


class AuthSettings(_Strict):
    """API keys (created with `hearth keys create`), the admin key and team limits."""

    admin_key: str | None = Field(
        None, description="The key for /admin/*: 'env:NAME' or 'file:PATH' (never logged)."
    )
    refresh_interval: Duration = Field(
        5.0, gt=0, description="Seconds between reloads of keys from the database."
    )
    teams: dict[str, TeamSettings] = Field(default_factory=dict, description="Team limits.")


class UsageSettings(_Strict):
    flush_interval: Duration = Field(
        2.0, gt=0, description="Seconds between batched writes of usage rows."
    )
    retention_days: float = Field(
        30.0, gt=0, description="Days per-request rows are kept; hourly roll-ups stay."
    )


class ResponsesSettings(_Strict):
    retention_days: float = Field(
        30.0,
        ge=0,
        description="Days stored Responses API answers are kept (for previous_response_id and "
        "GET /v1/responses/{id}); 0 keeps them forever.",
    )


class StoreSettings(_Strict):
    """The model store on disk (see docs/models.md)."""

    keep_revisions: int = Field(
        2,
        ge=0,
        description="Earlier revisions of a pulled model kept on disk after `hearth pull "
        "--update` (for `hearth rollback` and NAME@REVISION), besides the one it serves; "
        "older ones are deleted. 0 keeps none.",
    )


class MachineCost(_Strict):
    """What one machine (or engine) costs to run: a plain $/hour, or its hardware's price over
    its lifetime plus its power, or both (they add up). See docs/operations.md."""

    deployments: list[str] = Field(
        min_length=1, description="The local models (deployment names) this machine serves."
    )
    hourly: float | None = Field(
        None, ge=0, description="$/hour it costs to run (a rented GPU, hosting, staff)."
    )
    hardware_price: float | None = Field(
        None, ge=0, description="What the hardware cost; gives the break-even date."
    )
    lifetime_years: float | None = Field(
        None, gt=0, description="Years the hardware is written off over (with hardware_price)."
    )
    power_watts: float | None = Field(None, ge=0, description="Power drawn while serving, in W.")
    power_price: float | None = Field(None, ge=0, description="Price of power, $ per kWh.")
    purchased: dt.date | None = Field(
        None, description="When it started serving: cumulative savings count from here."
    )

    @model_validator(mode="after")
    def _complete(self) -> MachineCost:
        if (self.hardware_price is None) != (self.lifetime_years is None):
            raise ValueError("hardware_price and lifetime_years go together")
        if (self.power_watts is None) != (self.power_price is None):
            raise ValueError("power_watts and power_price go together")
        if self.hourly is None and self.hardware_price is None and self.power_watts is None:
            raise ValueError("give hourly, or hardware_price + lifetime_years, or power too")
        return self

    def running_per_hour(self) -> float:
        """$/hour spent while it serves, the hardware's own price left out."""
        power = (self.power_watts or 0.0) / 1000 * (self.power_price or 0.0)
        return (self.hourly or 0.0) + power

    def per_hour(self) -> float:
        """$/hour in all: running cost plus the hardware written off over its lifetime."""
        written_off = 0.0
        if self.hardware_price is not None and self.lifetime_years:
            written_off = self.hardware_price / (self.lifetime_years * 365.25 * 24)
        return self.running_per_hour() + written_off


class SavingsSettings(_Strict):
    """What self-hosting saved: the cost of local tokens against a cloud model's price."""

    reference: str = Field(
        "openai/gpt-4o-mini", description="The cloud model (in the price table) to compare with."
    )
    references: dict[str, str] = Field(
        default_factory=dict,
        description="Other cloud models for some local deployments, e.g. an embeddings model.",
    )
    prices_file: Path | None = Field(
        None, description="A TOML price table of your own, over the one shipped with Hearth."
    )
    machines: dict[str, MachineCost] = Field(
        default_factory=dict, description="Cost models of the machines serving local models."
    )
    throughput_days: float = Field(
        7.0, gt=0, description="Days of recent usage rows that measure throughput and the rate."
    )


class BudgetWebhookSettings(_Strict):
    """Where budget events are POSTed, signed with HMAC-SHA256."""

    url: str = Field(pattern=r"^https?://[^\s/]+", description="The receiver's URL.")
    secret: str = Field(description="The signing secret: 'env:NAME' or 'file:PATH' (never logged).")
    timeout: Duration = Field(10.0, gt=0, description="Seconds one delivery may take.")
    backoff: Duration = Field(1.0, gt=0, description="First retry delay; doubles.")
    backoff_max: Duration = Field(300.0, gt=0, description="Longest retry delay.")
    give_up_after: Duration = Field(
        86400.0, gt=0, description="Seconds after the event that retries stop."
    )


def _thresholds(value: list[int]) -> list[int]:
    return sorted(set(value))


Thresholds = Annotated[list[Annotated[int, Field(ge=1, le=1000)]], AfterValidator(_thresholds)]


class BudgetEventSettings(_Strict):
    """Events when a key or team reaches a share of its budget: audit log, metric, webhook."""

    thresholds: Thresholds = Field(
        default_factory=lambda: [50, 80, 100], description="Percentages of a budget that emit."
    )
    teams: dict[str, Thresholds] = Field(
        default_factory=dict, description="Other thresholds for some teams, by name."
    )
    keys: dict[str, Thresholds] = Field(
        default_factory=dict, description="Other thresholds for some keys, by prefix (hk_...)."
    )
    check_interval: Duration = Field(
        1.0, gt=0, description="Seconds between looks at what keys and teams have spent."
    )
    webhook: BudgetWebhookSettings | None = None


class Settings(_Strict):
    """Everything `hearth serve` needs to know; see docs/configuration.md."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    llama_server: Path | None = Field(
        None, description="Path of the llama-server binary (else PATH, then Hearth's tools)."
    )
    rpc_server: Path | None = Field(
        None,
        description="Path of the rpc-server binary for `hearth rpc-worker` (else PATH, "
        "then Hearth's tools).",
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (besides localhost, 127.0.0.1, ::1 and the bound address) that "
        "requests may address, e.g. a reverse proxy's name; '*.example.com' for subdomains, "
        "'*' for any. Empty on a non-loopback host: any name.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Web page origins (scheme://host[:port]) that may call Hearth from a "
        "browser, answered with CORS; '*' for any. Other pages' requests get 403.",
    )
    upstream_timeout: float = Field(
        600.0, gt=0, description="Seconds an engine may take to answer one request."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="'json': one JSON object per line, for log pipelines."
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    keep_alive: Duration = Field(
        300.0, description="Default idle time before a model is unloaded (negative: never)."
    )
    memory_budget: ByteSize | None = Field(
        None,
        description="Memory local models may use, e.g. '12GiB'; default: memory_fraction of RAM.",
    )
    memory_fraction: float = Field(
        0.8, gt=0, le=1, description="Share of physical RAM used when memory_budget is unset."
    )
    prompt_cache_max: ByteSize = Field(
        ByteSize(2 * 1024**3),
        description="Disk space, all models together, for the prompt caches (KV) of the busiest "
        "slots of llama.cpp models that unload, restored when they load again; 0 turns it off.",
    )
    request_queue_size: int = Field(
        64, ge=0, description="Requests per model that may wait for a free slot before 503."
    )
    load_queue_size: int = Field(
        32, ge=0, description="Requests that may wait for room to load a model before 503."
    )
    request_queue_timeout: Duration = Field(
        120.0,
        gt=0,
        description="Seconds a request may wait for a model's free slot before 503 + Retry-After.",
    )
    max_output_tokens: int = Field(
        4096,
        ge=1,
        description="Most tokens a local model generates for one request: a request asking for "
        "more is refused, one asking for none gets this (per model: max_output_tokens).",
    )
    shutdown_drain: Duration = Field(
        60.0,
        ge=0,
        description="Seconds a stopping Hearth lets answers in progress finish; then streams end "
        "with an error event and other requests get 503.",
    )
    models: dict[str, ModelSettings] = Field(
        default_factory=dict, description="Servable models by public name, besides the bundled one."
    )
    preload: list[str] = Field(
        default_factory=lambda: [BUNDLED_MODEL_NAME],
        description="Models loaded at start; /ready waits for them.",
    )
    deployments: dict[str, DeploymentSettings] = Field(
        default_factory=dict, description="Remote OpenAI-compatible upstreams, by public name."
    )
    routes: dict[str, RouteSettings] = Field(
        default_factory=dict, description="Public names served by several deployments."
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    redis_url: str | None = Field(
        None,
        description="Redis for state shared by replicas (response cache), e.g. redis://h:6379/0.",
    )

    database_url: str | None = Field(
        None, description="Keys, usage, audit log; default: SQLite file hearth.db in data_dir."
    )
    no_auth: bool = Field(
        False, description="Serve without keys on any address (logs a warning at each start)."
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    savings: SavingsSettings = Field(default_factory=SavingsSettings)
    budgets: BudgetEventSettings = Field(default_factory=BudgetEventSettings)

    def effective_memory_budget(self) -> int:
        if self.memory_budget is not None:
            return int(self.memory_budget)
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(physical * self.memory_fraction)

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def prompt_cache_dir(self) -> Path:
        return self.data_dir / "prompt-cache"

    @property
    def tools_dir(self) -> Path:
        return self.cache_dir / "tools"
