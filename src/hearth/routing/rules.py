"""Task-aware routes: a route's rules, checked in order before its strategy, each sending a
request that meets all its conditions to a deployment or another route; and why it went there.

Conditions are read from the request as the client sent it: tools, images, audio, a JSON schema,
the prompt's length in tokens, a regular expression over a message or the system prompt, the key,
its team, a header, or the class the route's classifier (routing/classifier.py) gives it. A rule
whose target cannot take the request (images to a model without vision, tools to a local model
whose template has none) is passed over. The reason (`rule:2 tools`, `rule:1 class:code`,
`strategy:priority`) is built from the settings alone, so it can label a metric.

Regular expressions are RE2's (matched in time linear in the text, never backtracking), and each
rule scans at most MAX_SCAN_CHARS of a request's text: the most recent messages first."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from hearth.config import RouteRule, RouteSettings
from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import Deployment, LocalDeployment, RemoteDeployment, Route
from hearth.errors import APIError, ConfigError, ModelNotFound
from hearth.routing.classifier import Classifier, Embed
from hearth.routing.request import RoutedRequest
from hearth.routing.tokens import CHARS_PER_TOKEN, estimate_tokens

log = logging.getLogger(__name__)

# Characters of a request's messages (or of its system prompt) one regular expression reads.
MAX_SCAN_CHARS = 64 * 1024
# An estimate this far from a rule's token limit decides alone; nearer, the model's own
# tokenizer counts (when the route has a local model that can, and it is loaded).
ESTIMATE_MARGIN = 4
SYSTEM_ROLES = ("system", "developer")

# Counts a chat request's input tokens with a local model's tokenizer (routing/tokens.py).
CountTokens = Callable[[LocalDeployment, dict[str, Any], str], Awaitable[int]]
IsLoaded = Callable[[LocalDeployment], bool]


def _pattern(text: str | None) -> Any:
    if text is None:
        return None
    options = re2.Options()
    options.log_errors = False
    return re2.compile(text, options)


@dataclass
class CompiledRule:
    number: int  # from 1, as the reason shows it
    settings: RouteRule
    target: Route
    reason: str
    message: Any = None  # compiled RE2 patterns
    system: Any = None


@dataclass
class RouteRules:
    route: Route  # the route these belong to (a reload builds new ones with the new route)
    rules: list[CompiledRule]
    classifier: Classifier | None = None

    @property
    def fallback_reason(self) -> str:
        return f"strategy:{self.route.strategy}"


@dataclass
class Decision:
    route: Route | None  # None: the route's own strategy decides
    reason: str


@dataclass
class RuleBook:
    """The rules of every route that has some, by route name."""

    routes: dict[str, RouteRules] = field(default_factory=dict)

    def get(self, route: Route) -> RouteRules | None:
        rules = self.routes.get(route.name)
        return rules if rules is not None and rules.route is route else None


def build_rule_book(routes: Mapping[str, RouteSettings], catalogue: Catalogue) -> RuleBook:
    """The compiled rules of `routes` over the catalogue's names; a ConfigError names the route
    and rule whose target or classifier model is unknown or unfit."""
    book = RuleBook()
    for name, settings in routes.items():
        if not settings.rules and settings.classifier is None:
            continue
        route = catalogue.resolve(name)
        classifier = None
        if settings.classifier is not None:
            where = f"routes.{name}.classifier.model"
            model = _resolve(catalogue, settings.classifier.model, where)
            if "embeddings" not in model.capabilities():
                raise ConfigError(
                    f"routes.{name}.classifier.model: '{model.name}' does not serve embeddings; "
                    "name an embeddings model, e.g. all-minilm-l6-v2"
                )
            classifier = Classifier(model, settings.classifier)
        compiled = []
        for index, rule in enumerate(settings.rules):
            where = f"routes.{name}.rules.{index}.to"
            compiled.append(
                CompiledRule(
                    number=index + 1,
                    settings=rule,
                    target=_resolve(catalogue, rule.to, where),
                    reason=f"rule:{index + 1} " + " ".join(_kinds(rule)),
                    message=_pattern(rule.message_matches),
                    system=_pattern(rule.system_matches),
                )
            )
        book.routes[name] = RouteRules(route, compiled, classifier)
    return book


def _resolve(catalogue: Catalogue, name: str, where: str) -> Route:
    try:
        return catalogue.resolve(name)
    except ModelNotFound:
        known = ", ".join(catalogue.names())
        raise ConfigError(
            f"{where}: '{name}' is not a model, deployment or route; known: {known}"
        ) from None


def _kinds(rule: RouteRule) -> Iterator[str]:
    for flag in ("tools", "images", "audio", "json_schema"):
        value = getattr(rule, flag)
        if value is not None:
            yield flag if value else f"no-{flag}"
    if rule.prompt_tokens_over is not None:
        yield "tokens"
    for name, value in (
        ("message", rule.message_matches),
        ("system", rule.system_matches),
        ("key", rule.key),
        ("team", rule.team),
        ("header", rule.header),
    ):
        if value is not None:
            yield name
    if rule.class_ is not None:
        yield f"class:{rule.class_}"


async def decide(
    rules: RouteRules,
    request: RoutedRequest,
    embed: Embed,
    count_tokens: CountTokens,
    is_loaded: IsLoaded,
) -> Decision:
    """Where the first rule that holds (and whose target can take the request) sends it."""
    facts = _Facts(request, rules, embed, count_tokens, is_loaded)
    name = rules.route.name
    for rule in rules.rules:
        target = capable(rule.target, request)  # first: cheaper than some conditions
        if target is None:
            log.debug("%s: rule %d passed over: its target cannot take it", name, rule.number)
            continue
        if await facts.holds(rule):
            return Decision(target, rule.reason)
    return Decision(None, rules.fallback_reason)


def capable(route: Route, request: RoutedRequest) -> Route | None:
    """`route` with only the deployments that can take the request; None if none can."""
    tools = bool(request.fields.get("tools"))
    schema = _wants_schema(request.fields)
    targets = [
        t
        for t in route.targets
        if _takes(t.deployment, request.capability, request.inputs, tools, schema)
    ]
    if not targets:
        return None
    if len(targets) == len(route.targets):
        return route
    return dataclasses.replace(route, targets=targets)


def _takes(
    deployment: Deployment, capability: str, inputs: frozenset[str], tools: bool, schema: bool
) -> bool:
    """Whether a deployment serves this capability and what the request needs. A local engine
    says what it can; a remote server is trusted to know its own model (as routing does)."""
    capabilities = deployment.capabilities
    if capability not in capabilities.names():
        return False
    if isinstance(deployment, RemoteDeployment):
        return True
    needs = set(inputs) | ({"tools"} if tools else set()) | ({"json_schema"} if schema else set())
    return all(getattr(capabilities, name, False) for name in needs)


def _wants_schema(fields: dict[str, Any]) -> bool:
    response_format = fields.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") == "json_schema"


class _Facts:
    """What the rules ask of one request, each worked out once, when first asked."""

    def __init__(
        self,
        request: RoutedRequest,
        rules: RouteRules,
        embed: Embed,
        count_tokens: CountTokens,
        is_loaded: IsLoaded,
    ) -> None:
        self.request = request
        self.rules = rules
        self.embed = embed
        self.count_tokens = count_tokens
        self.is_loaded = is_loaded
        self._texts: list[str] | None = None
        self._system: list[str] | None = None
        self._estimate: int | None = None
        self._exact: int | None = None
        self._class: str | None = None
        self._classified = False

    async def holds(self, rule: CompiledRule) -> bool:
        """Every condition of the rule, cheapest first."""
        settings = rule.settings
        fields = self.request.fields
        if settings.tools is not None and settings.tools != bool(fields.get("tools")):
            return False
        if settings.images is not None and settings.images != ("vision" in self.request.inputs):
            return False
        if settings.audio is not None and settings.audio != _has_audio(fields):
            return False
        if settings.json_schema is not None and settings.json_schema != _wants_schema(fields):
            return False
        caller = self.request.caller
        if settings.key is not None and (
            caller is None or not (caller.name in settings.key or caller.id in settings.key)
        ):
            return False
        if settings.team is not None and (caller is None or caller.team not in settings.team):
            return False
        if settings.header is not None and not self._headers_match(settings.header):
            return False
        if rule.system is not None and not _search(rule.system, self.system_texts()):
            return False
        if rule.message is not None and not _search(rule.message, self.texts()):
            return False
        if settings.prompt_tokens_over is not None and not await self._longer_than(
            settings.prompt_tokens_over
        ):
            return False
        return settings.class_ is None or await self.label() == settings.class_

    def _headers_match(self, wanted: dict[str, list[str]]) -> bool:
        headers = self.request.headers or {}
        for name, values in wanted.items():
            value = headers.get(name)
            if value is None or value.strip() not in values:
                return False
        return True

    def texts(self) -> list[str]:
        """The text of every message (a completion's prompt), the most recent first, within
        MAX_SCAN_CHARS in all."""
        if self._texts is None:
            self._texts = _within(reversed(list(_message_texts(self.request.fields))))
        return self._texts

    def system_texts(self) -> list[str]:
        if self._system is None:
            messages = self.request.fields.get("messages") or []
            self._system = _within(
                _content_text(m.get("content"))
                for m in messages
                if isinstance(m, dict) and m.get("role") in SYSTEM_ROLES
            )
        return self._system

    async def _longer_than(self, limit: int) -> bool:
        if self._estimate is None:
            self._estimate = _estimate(self.request.fields)
        estimate = self._estimate
        if estimate > limit * ESTIMATE_MARGIN or estimate * ESTIMATE_MARGIN < limit:
            return estimate > limit
        if self._exact is None:
            self._exact = await self._exact_count()
        return (estimate if self._exact is None else self._exact) > limit

    async def _exact_count(self) -> int | None:
        """Input tokens by the tokenizer of the route's first local model that counts, if it is
        loaded (a rule never loads a model); None otherwise or if the count fails."""
        if "messages" not in self.request.fields:
            return None
        for target in self.rules.route.targets:
            deployment = target.deployment
            if (
                isinstance(deployment, LocalDeployment)
                and deployment.capabilities.token_counting
                and self.is_loaded(deployment)
            ):
                try:
                    return await self.count_tokens(
                        deployment, self.request.fields, self.request.request_id
                    )
                except APIError as exc:
                    log.warning("%s: tokens not counted (%s)", deployment.name, exc.message)
                    return None
        return None

    async def label(self) -> str | None:
        """The classifier's class of the last user message (None: none fits, or no
        classifier, or the embeddings model could not answer: the rule does not hold)."""
        classifier = self.rules.classifier
        if classifier is None:
            return None
        if not self._classified:
            self._classified = True
            text = _last_user_text(self.request.fields)
            if text.strip():
                try:
                    self._class = (await classifier.classify(text, self.embed)).label
                except APIError as exc:
                    log.warning(
                        "%s: classifier unavailable, class rules skipped (%s)",
                        self.rules.route.name,
                        exc.message,
                    )
        return self._class


def _search(pattern: Any, texts: list[str]) -> bool:
    return any(pattern.search(text) is not None for text in texts)


def _within(texts: Iterator[str] | Any) -> list[str]:
    """`texts` in order, cut so that they hold MAX_SCAN_CHARS characters in all."""
    kept: list[str] = []
    left = MAX_SCAN_CHARS
    for text in texts:
        if left <= 0:
            break
        kept.append(text[:left])
        left -= len(kept[-1])
    return kept


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _message_texts(fields: dict[str, Any]) -> Iterator[str]:
    messages = fields.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                yield _content_text(message.get("content"))
        return
    prompt = fields.get("prompt")
    if isinstance(prompt, str):
        yield prompt
    elif isinstance(prompt, list):
        yield from (p for p in prompt if isinstance(p, str))


def _last_user_text(fields: dict[str, Any]) -> str:
    messages = fields.get("messages")
    if not isinstance(messages, list):
        return next(iter(_message_texts(fields)), "")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _has_audio(fields: dict[str, Any]) -> bool:
    for message in fields.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") in ("input_audio", "audio")
            for part in content
        ):
            return True
    return False


def _estimate(fields: dict[str, Any]) -> int:
    """Tokens estimated as routing/tokens.py does: characters over CHARS_PER_TOKEN."""
    if "messages" in fields:
        return estimate_tokens(fields)
    return math.ceil(sum(len(text) for text in _message_texts(fields)) / CHARS_PER_TOKEN)
