"""The API's request and answer models (pydantic): they validate every request and are the OpenAPI docs."""


from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from sentitune.inference import Prediction

# ------------------------------------------------------------------------------------ request / response


class PredictRequest(BaseModel):
    """One review (`text`) or several (`texts`); a target-dependent run also needs `target` / `targets`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "A wonderful film."},
        {"texts": ["A wonderful film.", "Two hours I will never get back."]},
        {"text": "Great food, rude staff.", "target": "staff"}]})

    text: StrictStr | None = Field(None, min_length=1, description="one review (answered with one prediction)")
    target: StrictStr | None = Field(None, min_length=1, description="with text: what the sentiment is toward")
    texts: list[StrictStr] | None = Field(None, min_length=1,
                                          description="several reviews (answered with {predictions: [...]})")
    targets: list[StrictStr] | None = Field(None, min_length=1, description="with texts: one target per text")

    @field_validator("text", "target")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("blank (only whitespace)")
        return value

    @field_validator("texts", "targets")
    @classmethod
    def _none_blank(cls, values: list[str] | None) -> list[str] | None:
        for i, value in enumerate(values or []):
            if not value.strip():
                raise ValueError(f"item {i} is empty or only whitespace")
        return values

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if self.text is None and self.texts is None:
            raise ValueError("give text (one review) or texts (a list of reviews)")
        if self.text is not None and self.texts is not None:
            raise ValueError("give text or texts, not both")
        if self.text is not None and self.targets is not None:
            raise ValueError("targets goes with texts; with text, give target")
        if self.texts is not None and self.target is not None:
            raise ValueError("target goes with text; with texts, give targets (one per text)")
        if self.texts is not None and self.targets is not None and len(self.targets) != len(self.texts):
            raise ValueError(f"targets has {len(self.targets)} items for {len(self.texts)} texts")
        return self


class PredictionOut(BaseModel):
    """The fields of `sentitune predict --json` (less the text), at full float precision."""

    label: str = Field(description="the most probable class")
    probability: float = Field(description="the probability of label")
    probs: dict[str, float] = Field(description="every class's probability, in the run's label order")
    prob_positive: float | None = Field(None, description="two classes: the second (positive) one's probability")
    target: str | None = Field(None, description="target-dependent runs: the target classified toward")


class PredictionsOut(BaseModel):
    predictions: list[PredictionOut] = Field(description="one per text, in order")


class ErrorOut(BaseModel):
    error: str = Field(description="one line naming the problem (the field, the limit)")
    detail: Any = Field(None, description="validation errors as FastAPI lists them")


class HealthOut(BaseModel):
    status: str = Field(description="ok while the batch worker runs")
    requests: int = Field(description="requests answered with predictions")
    texts: int = Field(description="texts classified")
    batches: int = Field(description="Predictor.predict calls")
    mean_batch: float = Field(description="texts per batch: above 1 when requests were batched together")
    largest_batch: int
    rejected: int = Field(description="requests refused with 503 (queue full)")
    failed: int = Field(description="requests answered with an error from the model")
    queued_texts: int
    queued_requests: int
    in_flight: int
    paused: bool


class MetadataOut(BaseModel):
    run: str
    method: str
    base_model: str | None = Field(description="the backbone: its hub id (a packaged model's too), or its folder; "
                                               "null for a tfidf run")
    labels: list[str]
    max_length: int | None = Field(description="tokens per text, special tokens included (longer: truncated)")
    truncation: str
    windows: int = Field(1, description="a text longer than max_length is read as up to this many windows, whose "
                                        "logits are pooled (data.windows)")
    needs_target: bool = Field(description="requests must give target / targets")
    precision: str | None = Field(description="what inference computes in (fp32 unless the run chose otherwise)")
    version: str
    limits: dict[str, int | float] = Field(description="what this server accepts (sentitune serve --help)")


def record(prediction: Prediction) -> PredictionOut:
    """What the API returns for one prediction."""
    binary = len(prediction.probs) == 2
    return PredictionOut(label=prediction.label, probability=prediction.probability, probs=prediction.probs,
                         prob_positive=prediction.prob_positive if binary else None, target=prediction.target)
