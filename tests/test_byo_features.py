"""Bring your own data: the feature declaration (RECLOOP_FEATURES), from YAML to a served answer.

The default declaration is today's feature table; a bad one is refused naming the
file, the feature and the field; and a custom one (members with age, gender and
occupation, no platform, items with a genre and a release date that may be null)
goes through ingest, validation, training and the real server in a process of its
own, since a declaration is read once per process. Its outputs carry the
declaration, so this (default) process refuses to train on them or to serve them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest
from conftest import ITEM

from recloop.features import declaration, logs, recorded, spec
from recloop.features.records import RecordError, parse_request
from recloop.features.spec import Feature

# The feature table as it was written in code before declarations (recloop/features/spec.py at 0d3b0cb).
COUNTRIES = ("US", "GB", "DE", "ES", "FR", "BR", "MX", "IN")
CATEGORIES = ("yoga", "hiit", "strength", "running", "cycling", "meditation", "dance", "stretching")
HISTORIC = (
    Feature("member_id", "member", "categorical", str, ("query", "ranking"), ""),
    Feature("tenure_days", "member", "numeric", int, ("query", "ranking"), "", value_range=(0, 3650), nullable=True),
    Feature("country", "member", "categorical", str, ("query", "ranking"), "", vocabulary=COUNTRIES, nullable=True),
    Feature("preferred_category", "member", "categorical", str, ("query", "ranking"), "", vocabulary=CATEGORIES,
            nullable=True),
    Feature("hour_of_day", "context", "numeric", int, ("query", "ranking"), "", value_range=(0, 23)),
    Feature("day_of_week", "context", "numeric", int, ("query", "ranking"), "", value_range=(0, 6)),
    Feature("platform", "context", "categorical", str, ("query", "ranking"), "",
            vocabulary=("ios", "android", "web", "tv")),
    Feature("item_id", "item", "categorical", str, ("candidate", "ranking"), ""),
    Feature("category", "item", "categorical", str, ("candidate", "ranking"), "", vocabulary=CATEGORIES),
    Feature("creator", "item", "categorical", str, ("candidate", "ranking"), ""),
    Feature("duration_min", "item", "numeric", float, ("candidate", "ranking"), "", value_range=(1, 180)),
    Feature("language", "item", "categorical", str, ("candidate", "ranking"), "",
            vocabulary=("en", "es", "de", "fr", "pt")),
    Feature("age_days", "item", "numeric", int, ("candidate", "ranking"), "", value_range=(0, 3650)),
    Feature("position", "impression", "numeric", int, ("ranking",), "", value_range=(0, 49), training_only=True),
)
COMPARED = ("name", "group", "kind", "dtype", "towers", "vocabulary", "value_range", "training_only")


def test_the_default_declaration_is_the_historic_feature_table():
    loaded = spec.features_of(declaration.load(None))
    assert [tuple(getattr(f, a) for a in COMPARED) for f in loaded] == \
        [tuple(getattr(f, a) for a in COMPARED) for f in HISTORIC]
    # nullable as before, but for age_days: an item's release_date may now be missing, and its age with it
    assert {f.name for f in loaded if f.nullable} == {f.name for f in HISTORIC if f.nullable} | {"age_days"}
    assert {f.name: f.buckets for f in loaded if f.kind == "numeric"} == {
        "tenure_days": 10, "hour_of_day": "per_value", "day_of_week": "per_value", "duration_min": 10,
        "age_days": 10, "position": None}
    assert [f.name for f in loaded if not f.skew] == ["day_of_week"]
    assert [f.name for f in loaded if f.strictly_positive] == ["duration_min"]
    # and it is what this process runs with (the tests set no RECLOOP_FEATURES)
    assert spec.SOURCE is None and spec.is_default() and spec.FEATURES == loaded


def test_the_default_declaration_round_trips_through_what_travels():
    again = declaration.parse(spec.DEFAULT.to_yaml(), "recorded")
    assert again == spec.DEFAULT


@pytest.mark.parametrize(("feature", "message"), [
    ({"kind": "number"}, ("feature 'age' (features[0]): field 'kind': Input should be 'categorical' or 'numeric', "
                          "got 'number'")),
    ({"bucket": 4}, "feature 'age' (features[0]): field 'bucket': Extra inputs are not permitted"),
    ({"vocabulary": ["young"]}, "feature 'age' (features[0]): vocabulary: only a categorical feature has one"),
    ({"buckets": "per_value"}, ("feature 'age' (features[0]): buckets: per_value needs an int feature with a "
                                "value_range")),
    ({"towers": ["candidate"]}, ("feature 'age' (features[0]): towers: a member feature cannot feed the candidate "
                                 "tower")),
    ({"name": "member_id"}, "feature 'member_id' (features[0]): name: 'member_id' is fixed by recloop"),
    ({"value_range": [-5, 3]}, "value_range: expected [min, max] with 0 <= min <= max, got [-5.0, 3.0]"),
    ({"max_length": 5}, "feature 'age' (features[0]): max_length: only a categorical feature can be a list"),
    ({"kind": "categorical", "dtype": "str", "max_length": 0},
     "feature 'age' (features[0]): field 'max_length': Input should be greater than or equal to 1, got 0"),
    ({"kind": "categorical", "dtype": "str", "group": "item", "towers": ["candidate"], "max_length": 3},
     "max_length: a list is a member or context feature"),
])
def test_a_bad_declaration_is_refused_naming_the_file_the_feature_and_the_field(tmp_path, feature, message):
    age = {"name": "age", "group": "member", "kind": "numeric", "dtype": "float", "towers": ["query"]}
    path = tmp_path / "features.yaml"
    path.write_text(json.dumps({"features": [age | feature]}))
    with pytest.raises(declaration.DeclarationError) as info:
        declaration.load(str(path))
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_a_list_feature_holds_up_to_max_length_non_empty_strings():
    from pydantic import TypeAdapter, ValidationError

    from recloop.features.records import contract_type

    recent = TypeAdapter(contract_type(Feature("recent_items", "member", "categorical", str, ("query",), "",
                                               max_length=3)))
    assert recent.validate_python(["i1", "i2"]) == ["i1", "i2"]
    assert recent.validate_python([]) == []  # a member with nothing to list yet
    for bad, why in ((["a", "b", "c", "d"], "at most 3 items"), ([""], "at least 1 character"),
                     ([1], "valid string"), ("i1", "valid list"), (None, "valid list")):
        with pytest.raises(ValidationError, match=why):
            recent.validate_python(bad)


def test_replay_rebuilds_a_logged_list_without_its_padding():
    import numpy as np

    from recloop.serving.replay import _value

    assert _value(np.array(["i3", "i1", "", ""])) == ["i3", "i1"]
    assert _value(np.array(["", ""])) == []
    assert _value(np.array(["US", "GB"])[0]) == "US" and _value(np.array([7, 8])[1]) == 8


def test_data_without_release_dates_declares_so_and_age_days_is_neither_read_nor_expected(monkeypatch):
    from recloop.validation import config

    text = "features:\n  - {name: genre, group: item, kind: categorical, dtype: str, towers: [candidate]}\n"
    without = declaration.parse(text + "release_dates: false\n", "mine.yaml")
    ages = {d.release_dates: next(f for f in spec.features_of(d) if f.name == "age_days")
            for d in (declaration.parse(text, "mine.yaml"), without)}
    assert ages[True].towers == ("candidate", "ranking") and ages[False].towers == ()
    assert config.default_rules(config.ValidationConfig())["age_days"].max_null_share == 0.5
    monkeypatch.setattr(config, "ACTIVE", without)
    assert config.default_rules(config.ValidationConfig())["age_days"].max_null_share is None


def test_a_role_must_name_a_declared_feature_of_its_kind(tmp_path):
    path = tmp_path / "features.yaml"
    path.write_text("features:\n  - {name: genre, group: item, kind: categorical, dtype: str, towers: [candidate]}\n"
                    "roles:\n  platform: genre\n")
    with pytest.raises(declaration.DeclarationError) as info:
        declaration.load(str(path))
    assert str(info.value) == f"{path}: roles.platform: expected a declared single-valued categorical context feature, got 'genre'"


def test_a_bad_declaration_fails_the_import_naming_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("features:\n  - {name: age, group: member, kind: numeric, dtype: str, towers: [query]}\n")
    out = subprocess.run([sys.executable, "-c", "import recloop.features.spec"], capture_output=True, text=True,
                         check=False, env={**os.environ, spec.ENV: str(path)})
    assert out.returncode == 1
    assert (f"DeclarationError: {path}: feature 'age' (features[0]): dtype: a numeric feature is an int or a "
            "float, got str") in out.stderr


def test_a_member_field_nobody_declared_is_rejected_naming_it():
    shown = [{"item_id": "i1", "position": 0, "row": "popular_now", "score": 0.5, "propensity": 0.2,
              "explored": False, "item": ITEM}]
    line = json.dumps(_request("r1", dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC), {"member_id": "m1", "age": 30},
                               {"hour_of_day": 8, "day_of_week": 0, "platform": "ios"}, shown))
    with pytest.raises(RecordError) as info:
        parse_request(line)
    assert info.value.field == "member.age" and info.value.reason == "unexpected"
    assert "unexpected field 'member.age' (not in the log contract)" in str(info.value)


def test_a_folder_without_a_recorded_declaration_was_made_with_the_default(tmp_path):
    assert recorded.read(str(tmp_path)) == spec.DEFAULT
    recorded.check(str(tmp_path), "--data folder")  # no error: the default is active


# ------------------------------------------------------------------------------ a custom declaration, end to end

CUSTOM = """\
features:
  - {name: age, group: member, kind: numeric, dtype: int, towers: [query], value_range: [0, 120], nullable: true,
     description: age in years}
  - {name: gender, group: member, kind: categorical, dtype: str, towers: [query, ranking], vocabulary: [f, m, x],
     nullable: true}
  - {name: occupation, group: member, kind: categorical, dtype: str, towers: [query, ranking]}
  - {name: recent_items, group: member, kind: categorical, dtype: str, towers: [query, ranking], max_length: 5,
     nullable: true, description: "the member's last clicked items, newest first"}
  - {name: hour_of_day, group: context, kind: numeric, dtype: int, towers: [query, ranking], value_range: [0, 23],
     buckets: per_value}
  - {name: day_of_week, group: context, kind: numeric, dtype: int, towers: [query, ranking], value_range: [0, 6],
     buckets: per_value, skew: false}
  - {name: genre, group: item, kind: categorical, dtype: str, towers: [candidate, ranking],
     vocabulary: [drama, comedy, action, horror]}
  - {name: runtime_min, group: item, kind: numeric, dtype: float, towers: [ranking], value_range: [1, 240],
     buckets: 4, strictly_positive: true}
roles:
  hour: hour_of_day
  category: genre
  duration: runtime_min
"""
START = dt.date(2026, 1, 5)  # a Monday; 7 days, the last one is eval
GENRES = ("drama", "comedy", "action", "horror")
OCCUPATIONS = ("student", "engineer", "artist", "retired")


def _request(rid: str, ts: dt.datetime, member: dict, context: dict, impressions: list) -> dict:
    return {"request_id": rid, "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "model_version": "v0", "member": member,
            "context": context, "impressions": impressions}


def _write_logs(root: Path) -> None:
    """A week of logs in the custom shape: 30 members, 80 items (every 5th without a release date), 40 requests
    a day of 5 impressions, clicks that follow a genre taste per occupation."""
    rng = random.Random(5)
    items = []
    for i in range(80):
        item = {"item_id": f"i{i:03d}", "genre": GENRES[i % 4], "runtime_min": float(10 + (i * 7) % 110)}
        if i % 5:
            item["release_date"] = (dt.date(2025, 10, 1) + dt.timedelta(days=i)).isoformat()
        elif i % 10:
            item["release_date"] = None  # null, or (every 10th) left out
        items.append(item)
    logs.write_lines(f"{root}/catalog/dt={START.isoformat()}/items.jsonl.gz", [json.dumps(i) for i in items])
    members = []
    for m in range(30):
        member = {"member_id": f"m{m:02d}", "occupation": OCCUPATIONS[m % 4]}
        if m % 4:
            member["age"] = 18 + m
        if m % 5:
            member["gender"] = "fmx"[m % 3]
        elif m % 10:
            member["gender"] = None
        members.append(member)
    events: dict[dt.date, list[str]] = {}  # by the event's own date
    clicked: dict[str, list[str]] = {}  # member -> items clicked so far, newest first
    for day in range(7):
        date = START + dt.timedelta(days=day)
        requests = []
        for r in range(40):
            member = dict(rng.choice(members))
            if member["member_id"] != "m07":  # one member's client never sends the list (nullable)
                member["recent_items"] = clicked.get(member["member_id"], [])[:5]
            ts = dt.datetime.combine(date, dt.time(rng.randrange(24), rng.randrange(60)), tzinfo=dt.UTC)
            shown = rng.sample(items, 5)
            impressions = []
            for position, item in enumerate(shown):
                release = item.get("release_date")
                age = None if release is None else (date - dt.date.fromisoformat(release)).days
                meta = {k: v for k, v in item.items() if k != "item_id"} | {"age_days": age}
                impressions.append({"item_id": item["item_id"], "position": position, "row": "popular_now",
                                    "score": 0.5, "propensity": 0.2, "explored": False, "item": meta})
                liked = GENRES.index(item["genre"]) == OCCUPATIONS.index(member["occupation"])
                if rng.random() < (0.6 if liked else 0.1):
                    clicked.setdefault(member["member_id"], []).insert(0, item["item_id"])
                    for event, after in (("click", 20), ("complete", 900)):
                        at = ts + dt.timedelta(seconds=after)
                        events.setdefault(at.date(), []).append(json.dumps({
                            "request_id": f"r{day}-{r}", "item_id": item["item_id"], "event": event,
                            "ts": at.strftime("%Y-%m-%dT%H:%M:%SZ")}))
            requests.append(json.dumps(_request(f"r{day}-{r}", ts, member,
                                                {"hour_of_day": ts.hour, "day_of_week": date.weekday()},
                                                impressions)))
        logs.write_lines(f"{logs.partition_dir(str(root), 'requests', date)}/part-00000.jsonl", requests)
    for date, lines in events.items():
        logs.write_lines(f"{logs.partition_dir(str(root), 'events', date)}/part-00000.jsonl", lines)


# Runs under RECLOOP_FEATURES=custom.yaml: the contract, the simulator's refusal, then the CLI's ingest, validate
# and train, and infra validation (the real `recloop serve` on 127.0.0.1 answering canned requests).
SCRIPT = textwrap.dedent("""
    import json, sys
    import recloop
    from typer.testing import CliRunner
    from recloop.cli.app import app
    from recloop.features import recorded, spec
    from recloop.features.records import RecordError, parse_request
    from recloop.serving.infra import validate

    root, logs, work = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {"features": [f.name for f in spec.FEATURES]}
    line = open(root + "/default-shaped.json").read()
    try:
        parse_request(line)
    except RecordError as e:
        out["default_shaped"] = str(e)
    try:
        recorded.check(root + "/empty", "--data folder")
    except recorded.DeclarationMismatch as e:
        out["unrecorded"] = str(e)

    def cli(*args):
        result = CliRunner().invoke(app, list(args))
        return {"code": result.exit_code, "output": result.output + repr(result.exception)}

    out["simulate"] = cli("simulate", "--out", work + "/sim")
    out["ingest"] = cli("ingest", "--logs", logs, "--start", "2026-01-05", "--end", "2026-01-11",
                        "--out", work + "/ingest")
    out["validate"] = cli("validate", "--data", work + "/ingest", "--out", work + "/validate")
    out["train"] = cli("train", "--data", work + "/ingest", "--out", work + "/model", "--epochs", "1", "--seed", "0",
                       "--validation", work + "/validate")
    if out["train"]["code"] == 0:
        out["infra"] = validate(work + "/model", work + "/infra", requests=5, p99_ms=60_000.0)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("byo")
    (root / "custom.yaml").write_text(CUSTOM)
    (root / "empty").mkdir()
    shown = [{"item_id": "i1", "position": 0, "row": "popular_now", "score": 0.5, "propensity": 0.2, "explored": False,
              "item": {"genre": "drama", "runtime_min": 10.0}}]
    default_shaped = _request("r1", dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC),
                              {"member_id": "m1", "occupation": "artist", "country": "US"},
                              {"hour_of_day": 8, "day_of_week": 0}, shown)
    (root / "default-shaped.json").write_text(json.dumps(default_shaped))
    _write_logs(root / "logs")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(root / "logs"), str(root / "work")],
                          capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, spec.ENV: str(root / "custom.yaml")})
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root / "work", json.loads(results[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_a_custom_declaration_is_ingested_validated_trained_and_served(custom_run):
    work, out = custom_run
    assert out["features"] == ["member_id", "age", "gender", "occupation", "recent_items", "hour_of_day",
                               "day_of_week", "item_id", "genre", "runtime_min", "age_days", "position"]
    assert "unexpected field 'member.country' (not in the log contract)" in out["default_shaped"]
    assert "was made under another feature declaration (none recorded: the default one)" in out["unrecorded"]
    assert out["simulate"]["code"] == 2 and "generates the default features only" in out["simulate"]["output"]
    for step in ("ingest", "validate", "train"):
        assert out[step]["code"] == 0, f"{step}: {out[step]['output'][-3000:]}"
    infra = out["infra"]
    assert infra["passed"], f"{infra['reason']}\n" + "\n".join(infra["server_output_tail"])
    assert infra["answers_valid"] == infra["requests"] > 0
    # the declaration travelled with the data and the model
    written = declaration.load(str(work / "ingest" / "features.yaml"))
    assert written == declaration.load(str(work / "model" / "features.yaml"))
    assert [f.name for f in written.features] == ["age", "gender", "occupation", "recent_items", "hour_of_day",
                                                  "day_of_week", "genre", "runtime_min"]
    # the list feature: examples hold each request's list as logged, and the query tower reads it padded
    import tensorflow as tf

    lengths = [len(tf.train.Example.FromString(r.numpy()).features.feature["recent_items"].bytes_list.value)
               for r in tf.data.TFRecordDataset(tf.io.gfile.glob(str(work / "ingest/train/*.tfrecord.gz")),
                                                compression_type="GZIP")]
    assert max(lengths) == 5 and 0 in lengths and len(set(lengths)) > 2
    query = tf.saved_model.load(str(work / "model" / "query_tower")).signatures["serving_default"]
    assert query.structured_input_signature[1]["recent_items"].shape.as_list() == [None, 5]
    # items without a release date were served, with their age missing
    items = {i["item_id"]: i for i in map(json.loads, logs.read_lines(str(work / "ingest/items/items.jsonl.gz")))}
    assert items["i000"]["release_date"] is None and items["i000"]["age_days"] is None
    assert items["i001"]["age_days"] is not None


@pytest.mark.slow
def test_this_process_refuses_to_train_on_or_serve_what_the_custom_declaration_made(custom_run):
    from recloop.serving.funnel import load_version
    from recloop.trainer.data import DataError, load

    work, _ = custom_run
    with pytest.raises(DataError) as info:
        load([str(work / "ingest")])
    message = str(info.value)
    assert message.startswith(f"--data folder {work / 'ingest'} was made under another feature declaration "
                              f"({work / 'ingest' / 'features.yaml'}) than the active one (RECLOOP_FEATURES=the "
                              "default one")
    assert "features only there: ['age', 'gender', 'genre', 'occupation', 'recent_items', 'runtime_min']" in message
    with pytest.raises(recorded.DeclarationMismatch, match="model .* was made under another feature declaration"):
        load_version(str(work / "model"), {}, dt.date(2026, 1, 11))


# ------------------------------------------------------------------------------ the pipelines carry it to each task

@pytest.mark.parametrize(("pipeline", "tasks"), [
    ("weekly", {"ingest", "validate", "train", "evaluate", "infra-validate"}), ("daily", {"monitor"})])
def test_the_compiled_pipelines_pass_the_declaration_to_every_task_that_reads_data(tmp_path, pipeline, tasks):
    from kfp import compiler

    from recloop.pipelines import definitions
    from recloop.pipelines.compile import read_ir

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(getattr(definitions, pipeline)(), str(path))
    ir = read_ir(path)
    assert ir["root"]["inputDefinitions"]["parameters"]["features"] == {
        "defaultValue": "", "isOptional": True, "parameterType": "STRING"}
    wired = {name for name, task in ir["root"]["dag"]["tasks"].items()
             if task.get("inputs", {}).get("parameters", {}).get("features") == {"componentInputParameter": "features"}}
    assert wired == tasks
    for name in tasks:  # each sets RECLOOP_FEATURES before it imports recloop (read once, at import)
        command = "\n".join(ir["deploymentSpec"]["executors"][f"exec-{name}"]["container"]["command"])
        assert command.index('os.environ["RECLOOP_FEATURES"] = features') < command.index("from recloop")
