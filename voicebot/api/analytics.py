"""``GET /api/analytics``: what the dashboard plots, for a period and a tenant: sessions and turns
over time, latency percentiles by stage over time, language and intent mix, containment (the
conversations no person had to take), hand-offs by reason, satisfaction from ratings, the
sentiment trend. Counted by the storage backend (``Storage.analytics``). Scope ``analytics:read``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from voicebot.access.http import Caller, requires
from voicebot.core.runtime import BotRuntime
from voicebot.storage.analytics import PERCENTILES, AnalyticsQuery

DAY_S = 86_400.0
MAX_PERIOD_S = 400 * DAY_S
MAX_BUCKETS = 500
NICE_BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, DAY_S, 7 * DAY_S)
TARGET_BUCKETS = 48


class Containment(BaseModel):
    conversations: int  # with a turn in the period
    handed_off: int
    contained: int
    rate: float | None  # contained / conversations; None without conversations


class Satisfaction(BaseModel):
    ratings: dict[str, int]  # stars "1".."5" -> conversations
    mean_rating: float | None
    thumbs_up: int
    thumbs_down: int


class Analytics(BaseModel):
    tenant: str | None
    tenants: list[str] = []  # the tenants the key reaches (the dashboard's filter)
    since: float
    until: float
    bucket_s: float
    buckets: list[float]  # each bucket's start (epoch seconds); the series below have one value per bucket
    sessions: list[int]
    turns: list[int]
    languages: dict[str, int]
    intents: dict[str, int]  # "(none)": turns without an intent
    containment: Containment
    handoffs: dict[str, int]
    satisfaction: Satisfaction
    sentiment: list[float | None]  # mean score per bucket (-1 .. 1)
    latency: dict[str, dict[str, list[float | None]]]  # stage ("turn": all stages) -> "p50"/"p95"/"p99" -> ms per bucket


def default_bucket(span_s: float) -> float:
    """The smallest round bucket that keeps the series near TARGET_BUCKETS points."""
    return next((b for b in NICE_BUCKETS_S if span_s / b <= TARGET_BUCKETS), NICE_BUCKETS_S[-1])


def dense(rows: list[tuple[Any, ...]], count: int, column: int = 1) -> list[Any]:
    series: list[Any] = [None] * count
    for row in rows:
        if 0 <= row[0] < count:
            series[row[0]] = row[column]
    return series


def shape(query: AnalyticsQuery, rows: dict[str, list[tuple[Any, ...]]]) -> Analytics:
    count = max(1, int(-(-(query.until - query.since) // query.bucket_s)))
    conversations, handed = rows["outcomes"][0] if rows["outcomes"] else (0, 0)
    ratings = {str(stars): n for stars, n in rows["ratings"]}
    rated = sum(ratings.values())
    latency: dict[str, dict[str, list[float | None]]] = {}
    for bucket, stage, *values in rows["latency"]:
        series = latency.setdefault(stage, {f"p{round(p * 100)}": [None] * count for p in PERCENTILES})
        if 0 <= bucket < count:
            for p, value in zip(PERCENTILES, values[:len(PERCENTILES)], strict=True):
                series[f"p{round(p * 100)}"][bucket] = round(float(value), 3)
    return Analytics(
        tenant=query.tenant, since=query.since, until=query.until, bucket_s=query.bucket_s,
        buckets=[query.since + i * query.bucket_s for i in range(count)],
        sessions=[n or 0 for n in dense(rows["sessions"], count)], turns=[n or 0 for n in dense(rows["turns"], count)],
        languages={language: n for language, n in rows["languages"]},
        intents={intent or "(none)": n for intent, n in rows["intents"]},
        containment=Containment(conversations=conversations, handed_off=handed, contained=conversations - handed,
                                rate=round((conversations - handed) / conversations, 4) if conversations else None),
        handoffs={reason: n for reason, n in rows["handoffs"]},
        satisfaction=Satisfaction(ratings=ratings, mean_rating=round(sum(int(s) * n for s, n in ratings.items()) / rated, 3) if rated else None,
                                  thumbs_up=dict(rows["thumbs"]).get(1, 0), thumbs_down=dict(rows["thumbs"]).get(-1, 0)),
        sentiment=[None if v is None else round(float(v), 4) for v in dense(rows["sentiment"], count)],
        latency=latency,
    )


def period_query(since: float | None, until: float | None, bucket_s: float | None, tenant: str | None) -> AnalyticsQuery:
    """The period asked for (default: the last 7 days up to now), refused clearly when it makes no sense."""
    until = time.time() if until is None else until
    since = until - 7 * DAY_S if since is None else since
    if until <= since:
        raise HTTPException(422, "'to' must be after 'from'")
    if until - since > MAX_PERIOD_S:
        raise HTTPException(422, f"a period is at most {MAX_PERIOD_S / DAY_S:.0f} days")
    bucket_s = bucket_s or default_bucket(until - since)
    if (until - since) / bucket_s > MAX_BUCKETS:
        raise HTTPException(422, f"at most {MAX_BUCKETS} buckets: make 'bucket' larger")
    return AnalyticsQuery(since=since, until=until, bucket_s=bucket_s, tenant=tenant)


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    @api.get("/api/analytics", response_model=Analytics, tags=["analytics"], responses={404: {"description": "no such tenant"}, 422: {"description": "a period that makes no sense"}})
    async def analytics(since: float | None = Query(None, alias="from", ge=0, le=1e11, description="epoch seconds; default: 'to' - 7 days"),
                        until: float | None = Query(None, alias="to", ge=0, le=1e11, description="epoch seconds; default: now"),
                        bucket: float | None = Query(None, ge=1, le=MAX_PERIOD_S, description="seconds per point; default: about 48 points"),
                        caller: Caller = Depends(requires("analytics:read"))) -> Analytics:
        """Aggregates of the turns stored in the period (of the key's tenant, or ``?tenant=``)."""
        if caller.tenant is not None and caller.tenant not in runtime.engines:
            raise HTTPException(404, f"this server hosts no tenant {caller.tenant!r}")
        query = period_query(since, until, bucket, caller.tenant)
        result = shape(query, await runtime.storage.analytics(query))
        result.tenants = sorted(t for t in runtime.engines if caller.principal.can_reach(t))
        return result

    return api
