"""The objects that live as long as the server, built and wired together here (the composition
root): settings, catalogue, scheduler, upstream client, router, key service, usage recorder and
the pipeline over them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from hearth.auth.budget_events import BudgetWatcher
from hearth.auth.budget_webhook import BudgetWebhook
from hearth.auth.service import KeyService
from hearth.config import Settings
from hearth.conversations.store import ResponseStore
from hearth.db.engine import create_engine, migrate
from hearth.deployments.breaker import BREAKER_GAUGE
from hearth.deployments.build import build_catalogue
from hearth.deployments.catalogue import Catalogue
from hearth.engines.llama_cpp.locate import optional_llama_server
from hearth.engines.supervisor import SupervisorPolicy
from hearth.errors import SetupError
from hearth.models.bundled import ensure_bundled_model
from hearth.models.bundled_embeddings import ensure_embeddings_model
from hearth.observability.metrics import HearthMetrics
from hearth.observability.tracing import Tracing
from hearth.pipeline.account import Accountant
from hearth.pipeline.admit import Admission
from hearth.pipeline.pipeline import Pipeline
from hearth.routing.cache import MemoryCache, RedisCache, ResponseCache
from hearth.routing.health_checks import HealthChecker
from hearth.routing.router import Router
from hearth.routing.rules import build_rule_book
from hearth.scheduler.scheduler import Scheduler
from hearth.upstream.client import UpstreamClient
from hearth.upstream.images import ImageFetcher
from hearth.usage.journal import UsageJournal
from hearth.usage.recorder import UsageRecorder
from hearth.usage.savings import check_settings as check_savings_settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    catalogue: Catalogue
    scheduler: Scheduler
    upstream: UpstreamClient
    router: Router
    health: HealthChecker
    engine_binary: Path | None  # None: llama-server is missing (a gateway needs none)
    bundled_model: Path
    pipeline: Pipeline
    keys: KeyService
    usage: UsageRecorder
    database: AsyncEngine
    responses: ResponseStore  # stored Responses API answers
    budget_events: BudgetWatcher | None = None  # thresholds of budgets reached
    budget_webhook: BudgetWebhook | None = None  # their deliveries, when a webhook is set

    async def reload(self, settings: Settings) -> dict[str, str]:
        """Apply new model settings while serving (SIGHUP or POST /admin/reload). Only the
        catalogue changes: listening address, data folder and engine binary stay as they are."""
        catalogue = await asyncio.to_thread(
            build_catalogue, settings, self.engine_binary, self.bundled_model
        )
        catalogue.carry_over(self.catalogue)
        rules = build_rule_book(settings.routes, catalogue)  # before anything changes
        changes = await self.scheduler.adopt(catalogue)
        self.catalogue, self.settings = catalogue, settings
        self.keys.reload(settings)  # team limits
        if self.budget_events is not None:  # thresholds (the webhook stays as it started)
            self.budget_events.settings = settings.budgets
        self.router.settings = settings.routing
        self.router.rules = rules  # classifiers embed their examples again on first use
        log.info("settings reloaded: %s", changes or "no model loaded")
        return changes

    def collect_metrics(self) -> Iterator[Metric]:
        """Figures read from the scheduler at scrape time."""
        labels = ["model"]
        loaded = GaugeMetricFamily("hearth_model_loaded", "1 for each loaded model.", labels=labels)
        memory = GaugeMetricFamily(
            "hearth_model_memory_bytes", "Estimated memory of loaded models.", labels=labels
        )
        busy = GaugeMetricFamily("hearth_model_slots_busy", "Slots decoding.", labels=labels)
        queued = GaugeMetricFamily(
            "hearth_model_queue_depth", "Requests waiting for a slot.", labels=labels
        )
        restarts = GaugeMetricFamily(
            "hearth_engine_restarts", "Restarts of a loaded model's engine.", labels=labels
        )
        for model in self.scheduler.loaded():
            name = [model.deployment.name]
            loaded.add_metric(name, 1)
            memory.add_metric(name, model.memory_bytes)  # all its replicas
            busy.add_metric(name, model.slots.busy)
            queued.add_metric(name, model.slots.queued)
            restarts.add_metric(name, model.supervisor.restarts)
        shared = GaugeMetricFamily(
            "hearth_rate_limits_shared",
            "1 while rate limits are counted in Redis for every replica; 0 while Redis is "
            "unreachable (or not configured) and this replica counts on its own.",
        )
        shared.add_metric([], 1 if self.keys.access.counter.shared else 0)
        yield shared
        budgets = GaugeMetricFamily(
            "hearth_budget_used_ratio",
            "Share of its budget a key or team has spent this period (1 = exhausted).",
            labels=["subject", "period", "unit"],
        )
        for subject, budget, used in self.keys.access.budget_use():
            budgets.add_metric([subject, budget.period, budget.unit], used)
        yield budgets
        waiting = GaugeMetricFamily(
            "hearth_load_queue_depth", "Requests waiting for memory to load a model."
        )
        waiting.add_metric([], self.scheduler.waiting)
        yield from (loaded, memory, busy, queued, restarts, waiting)
        breaker = GaugeMetricFamily(
            "hearth_deployment_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
            labels=["deployment"],
        )
        in_flight = GaugeMetricFamily(
            "hearth_deployment_in_flight",
            "Requests in flight per deployment.",
            labels=["deployment"],
        )
        for deployment in self.catalogue.all_deployments():
            breaker.add_metric([deployment.name], BREAKER_GAUGE[deployment.stats.breaker.state])
            in_flight.add_metric([deployment.name], deployment.stats.in_flight)
        yield from (breaker, in_flight)

    async def aclose(self) -> None:
        await self.health.aclose()
        if self.budget_events is not None:
            await self.budget_events.aclose()
        if self.budget_webhook is not None:
            await self.budget_webhook.aclose()
        await self.scheduler.aclose()
        await self.upstream.aclose()
        if self.router.images is not None:
            await self.router.images.aclose()
        if self.router.cache is not None:
            await self.router.cache.aclose()
        await self.keys.aclose()
        await self.responses.aclose()
        await self.usage.aclose()  # last: writes the usage of the requests just ended
        await self.database.dispose()


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def supervisor_policy(settings: Settings) -> SupervisorPolicy:
    engine = settings.engine
    return SupervisorPolicy(
        startup_timeout=engine.startup_timeout,
        shutdown_grace=engine.shutdown_grace,
        backoff_max=engine.restart_backoff_max,
    )


async def start_services(
    settings: Settings, metrics: HearthMetrics, tracing: Tracing | None = None
) -> Services:
    """Build the catalogue and start loading the preloaded models; returns before they are ready."""
    # None: a gateway without llama-server; its llama.cpp models answer 503 saying how to get it.
    located = optional_llama_server(settings.llama_server, settings.tools_dir)
    binary = None if located is None else located.path
    check_savings_settings(settings.savings)  # the price table, before anything starts
    database = create_engine(settings)
    await migrate(database)
    journal = UsageJournal(settings.data_dir / "usage-journal")
    usage = UsageRecorder(database, settings.usage, journal)
    # First: refuses an exposed address without keys before any engine starts.
    keys = await KeyService.start(settings, database, usage)
    webhook = None  # made now: a missing secret stops the start before any engine runs
    if settings.budgets.webhook is not None:
        webhook = BudgetWebhook(database, settings.budgets.webhook, metrics)
    await usage.start()
    bundled_model = await asyncio.to_thread(ensure_bundled_model, settings.models_dir)
    # The embeddings model joins the store once written (from local files: nothing downloads).
    await asyncio.to_thread(ensure_embeddings_model, settings.models_dir, settings.cache_dir)
    catalogue = await asyncio.to_thread(build_catalogue, settings, binary, bundled_model)
    rules = build_rule_book(settings.routes, catalogue)  # a bad rule stops the start here
    for name in settings.preload:  # `hearth serve` refuses these before it gets here
        if (missing := catalogue.local(name).unavailable) is not None:
            raise SetupError(missing)
    scheduler = Scheduler(
        supervisor_policy(settings),
        settings.logs_dir,
        memory_budget=settings.effective_memory_budget(),
        queue_size=settings.load_queue_size,
        request_queue_size=settings.request_queue_size,
        request_queue_timeout=settings.request_queue_timeout,
        drain_timeout=settings.upstream_timeout,  # a replaced engine's requests may finish
        on_model_ready=lambda name, seconds: metrics.model_load_duration.labels(name).observe(
            seconds
        ),
    )
    scheduler.start()
    for name in settings.preload:
        deployment = catalogue.local(name)
        # Preloaded models stay loaded unless their own keep_alive says otherwise: /ready
        # promises they are there.
        own = settings.models.get(deployment.name)
        scheduler.load(deployment, keep_alive=None if own and own.keep_alive is not None else -1)
    log.info("engine logs in %s", settings.logs_dir)
    upstream = UpstreamClient(settings.upstream_timeout)
    router = Router(
        scheduler,
        upstream,
        settings.routing,
        metrics,
        cache=response_cache(settings),
        tracing=tracing or Tracing(),
        max_entry_bytes=int(settings.cache.max_entry_bytes),
        rules=rules,
        images=ImageFetcher(settings.images),
    )
    # Probes read the catalogue each round, so a reload's deployments are probed too.
    health = HealthChecker(
        upstream, lambda: services.catalogue.remotes(), settings.routing.health_check_interval
    )
    pipeline = Pipeline(
        catalogue=lambda: services.catalogue,
        admission=Admission(keys, metrics),
        router=router,
        accountant=Accountant(lambda: services.catalogue, metrics, usage, keys),
    )
    services = Services(
        settings,
        catalogue,
        scheduler,
        upstream,
        router,
        health,
        binary,
        bundled_model,
        pipeline,
        keys,
        usage,
        database,
        ResponseStore(database, settings.responses.retention_days),
    )
    services.responses.start()
    health.start()
    await start_budget_events(services, metrics, webhook)
    return services


async def start_budget_events(
    services: Services, metrics: HearthMetrics, webhook: BudgetWebhook | None
) -> None:
    """Watch budgets for thresholds reached and, with a webhook, deliver the events."""
    if webhook is not None:
        webhook.start()
    services.budget_webhook = webhook
    wake = None if webhook is None else webhook.wake
    settings = services.settings.budgets
    watcher = BudgetWatcher(services.database, services.keys.access, settings, metrics, wake)
    await watcher.start()
    services.budget_events = watcher


def response_cache(settings: Settings) -> ResponseCache | None:
    cache = settings.cache
    if not cache.enabled:
        return None
    if settings.redis_url:
        return RedisCache(settings.redis_url, cache.ttl)
    return MemoryCache(cache.ttl, cache.max_entries)
