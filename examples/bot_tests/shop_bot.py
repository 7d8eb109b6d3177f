"""A tiny customer-service bot built on rag_pipeline: it answers from the shop's documents and
hands the customer over to a person when they have nothing on the question."""

from __future__ import annotations

from rag_pipeline import Answer, Assistant, Settings

HANDOVER = "已为您转接人工客服，请稍候。"


class ShopBot:
    """Answers a customer's message; ``handed_over`` says whether a person must take over.

    >>> bot = ShopBot.from_settings(settings)            # doctest: +SKIP
    >>> bot.reply("怎么申请退款").answer                   # doctest: +SKIP
    """

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self.handed_over = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ShopBot:
        return cls(Assistant.from_settings(settings))

    def reply(self, message: str) -> Answer:
        answer = self.assistant.ask(message.strip())
        # The refusal is the moment to call a person in; the customer is told so.
        self.handed_over = answer.refused
        return answer
