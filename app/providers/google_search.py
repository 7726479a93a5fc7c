"""A search provider speaking the Google Custom Search JSON API."""

from __future__ import annotations

import httpx

from app.providers.base import ProviderError, SearchResult
from app.providers.responses import let_go


class GoogleSearch:
    """``GET {url}?cx=&q=&num=``; returns ``items[].title/link/snippet``.

    The key goes in the ``X-goog-api-key`` header, which Google APIs accept, rather than
    the ``key`` query parameter: URLs end up in span attributes and error messages.
    """

    name = "google"

    def __init__(
        self,
        *,
        url: str,
        api_key: str | None,
        cse_id: str | None,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key or not cse_id:
            raise ValueError("the google search provider needs GOOGLE_API_KEY and GOOGLE_CSE_ID")
        self._url = url
        self._params = {"cx": cse_id}
        self.http_client = httpx.AsyncClient(
            timeout=timeout_s, transport=transport, headers={"X-goog-api-key": api_key}
        )

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        params = {**self._params, "q": query, "num": str(min(limit, 10))}
        try:
            response = await self.http_client.get(self._url, params=params)
        except httpx.HTTPError as exc:
            raise ProviderError(f"search request failed: {type(exc).__name__}") from exc
        let_go(response)  # read whole and closed already
        if response.status_code >= 400:
            raise ProviderError(f"search server answered HTTP {response.status_code}")
        try:
            items = response.json().get("items", [])
            return [
                SearchResult(
                    title=i.get("title", ""), url=i.get("link", ""), snippet=i.get("snippet", "")
                )
                for i in items[:limit]
            ]
        except (ValueError, AttributeError) as exc:
            raise ProviderError("search server sent a malformed response") from exc

    async def aclose(self) -> None:
        await self.http_client.aclose()
