"""Tests of recloop.features.spec: the feature table agrees with the record models."""

from __future__ import annotations

import recloop  # noqa: F401  (first: sets the Keras switch before TensorFlow is imported)

# isort: split
import pytest

from recloop.features.records import Context, Impression, ItemFeatures, MemberFeatures
from recloop.features.spec import (
    CATEGORIES,
    COUNTRIES,
    FEATURES,
    LABELS,
    LANGUAGES,
    PLATFORMS,
    Feature,
    feature,
    features_for,
)

MODEL_OF_GROUP = {
    "member": MemberFeatures, "context": Context, "item": ItemFeatures, "impression": Impression,
}
IDS = [f.name for f in FEATURES]


def test_feature_names_are_unique():
    assert len(IDS) == len(set(IDS))


@pytest.mark.parametrize("f", FEATURES, ids=IDS)
def test_every_feature_is_a_field_of_its_record_model(f: Feature):
    # item_id is the one item feature that lives on the impression, not in impressions[].item
    model = Impression if f.name == "item_id" else MODEL_OF_GROUP[f.group]
    assert f.name in model.__annotations__, f"{f.group}.{f.name} is not a field of {model.__name__}"
    if f.nullable:
        assert f.name not in model.__required_keys__


def test_item_id_is_on_the_impression_not_the_item():
    assert "item_id" in Impression.__annotations__
    assert "item_id" not in ItemFeatures.__annotations__
    assert feature("item_id").group == "item"


def test_every_model_field_of_the_request_is_a_feature_or_known_metadata():
    names = set(IDS)
    assert set(MemberFeatures.__annotations__) <= names
    assert set(Context.__annotations__) <= names
    assert set(ItemFeatures.__annotations__) - names == {"release_date"}  # age_days carries it
    assert set(Impression.__annotations__) - names == {"row", "score", "propensity", "explored", "item"}


@pytest.mark.parametrize("f", FEATURES, ids=IDS)
def test_feature_attributes_are_consistent(f: Feature):
    assert f.group in ("member", "context", "item", "impression")
    assert f.kind in ("categorical", "numeric")
    assert f.dtype in (str, int, float)
    assert f.towers and set(f.towers) <= {"query", "candidate", "ranking"}
    assert "ranking" in f.towers  # the ranking model reads every feature
    assert f.description
    if f.kind == "categorical":
        assert f.dtype is str
        assert f.value_range is None
    else:
        assert f.dtype in (int, float)
        assert f.vocabulary is None
        assert f.value_range is not None
        low, high = f.value_range
        assert low <= high
    if f.vocabulary is not None:
        assert f.dtype is str
        assert len(f.vocabulary) == len(set(f.vocabulary)) > 0


def test_vocabularies():
    assert feature("platform").vocabulary == PLATFORMS
    assert feature("country").vocabulary == COUNTRIES
    assert feature("preferred_category").vocabulary == CATEGORIES
    assert feature("category").vocabulary == CATEGORIES
    assert feature("language").vocabulary == LANGUAGES
    # open vocabularies: ids, hashed with OOV buckets
    for name in ("member_id", "item_id", "creator"):
        assert feature(name).vocabulary is None


def test_value_ranges_match_the_record_bounds():
    assert feature("hour_of_day").value_range == (0, 23)
    assert feature("day_of_week").value_range == (0, 6)
    assert feature("position").value_range[0] == 0
    assert feature("duration_min").dtype is float
    assert feature("duration_min").value_range[0] > 0


def test_nullable_features_are_the_optional_member_features_and_item_age():
    # age_days is missing for an item served without a release_date
    assert {f.name for f in FEATURES if f.nullable} == {"tenure_days", "country", "preferred_category", "age_days"}


def test_query_tower_reads_only_member_and_context_features():
    query = features_for(tower="query")
    assert query
    assert {f.group for f in query} == {"member", "context"}
    assert {f.name for f in query} == {f.name for f in FEATURES if f.group in ("member", "context")}


def test_candidate_tower_reads_only_item_features():
    candidate = features_for(tower="candidate")
    assert {f.group for f in candidate} == {"item"}
    assert {f.name for f in candidate} == {f.name for f in FEATURES if f.group == "item"}
    assert "item_id" in {f.name for f in candidate}


def test_position_is_training_only_and_only_in_ranking():
    position = feature("position")
    assert position.training_only
    assert position.towers == ("ranking",)
    assert position.group == "impression"
    assert [f.name for f in FEATURES if f.training_only] == ["position"]
    assert position not in features_for(tower="query")
    assert position not in features_for(tower="candidate")
    assert position in features_for(tower="ranking")


def test_ranking_tower_reads_everything():
    assert features_for(tower="ranking") == FEATURES


def test_features_for_filters_and_keeps_spec_order():
    assert features_for() == FEATURES
    assert [f.name for f in features_for(group="context")] == ["hour_of_day", "day_of_week", "platform"]
    assert features_for(tower="query", group="item") == ()
    assert [f.name for f in features_for(tower="candidate", group="item")] == [
        "item_id", "category", "creator", "duration_min", "language", "age_days"]
    for tower in ("query", "candidate", "ranking"):
        chosen = features_for(tower=tower)
        assert list(chosen) == [f for f in FEATURES if f in chosen]


def test_feature_lookup():
    assert feature("platform") is next(f for f in FEATURES if f.name == "platform")
    with pytest.raises(KeyError) as info:
        feature("nope")
    message = str(info.value)
    assert "'nope'" in message
    assert "member_id" in message and "position" in message  # lists the known ones


def test_features_are_frozen():
    with pytest.raises(AttributeError):
        feature("platform").name = "os"  # type: ignore[misc]


def test_every_feature_is_an_example_column():
    from recloop.features.examples import COLUMNS

    for f in FEATURES:
        assert f.name in COLUMNS
        assert COLUMNS[f.name] is f.dtype
    assert {f"label_{head}" for head in LABELS} <= set(COLUMNS)
    assert LABELS == ("click", "complete", "like")
