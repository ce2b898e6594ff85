"""Machine-to-machine routes: ``POST /hooks/ses``, Amazon SES's bounces and complaints via SNS.

Off (404, no route) unless NEWSLETTER_SNS_TOPIC_ARNS names the topics to accept. The endpoint
answers 200 once a verified notification is applied (or had nothing to apply), 403 when it is not
a genuine SNS message of those topics, and 503 when the database does not answer (the error pages
do that), so that SNS delivers it again later.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.adapters.sns import CertificateCache
from newsletter.services.ses import HookOutcome, handle_sns_post
from newsletter.web.pages import Site, log


def hook_routes(site: Site) -> list[BaseRoute]:
    if not site.settings.sns_topic_arns:
        return []
    certificates = CertificateCache()

    async def ses_hook(request: Request) -> Response:
        body = await request.body()
        result = await run_in_threadpool(
            handle_sns_post, site.store, site.settings, body, certificates
        )
        for line in result.lines:
            (log.warning if result.outcome is HookOutcome.REJECTED else log.info)("%s", line)
        if result.outcome is HookOutcome.REJECTED:
            return PlainTextResponse("forbidden", status_code=403)
        return PlainTextResponse("ok")

    return [Route("/hooks/ses", ses_hook, methods=["POST"], name="ses_hook")]
