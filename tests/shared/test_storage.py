"""One contract for every object store: a local folder and S3 (moto's server), with and
without a key prefix."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from stylequeue.shared.settings import load_settings
from stylequeue.shared.storage import (
    FileStorage,
    ObjectNotFound,
    S3Storage,
    Storage,
    get_storage,
    storage_from_url,
)

BACKENDS = ["file", "s3", "s3-prefixed"]
BAD_KEYS = ["", "/abs", "a/../b", "a//b", "./x", "..", "a/", "a/./b"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return FileStorage(tmp_path / "objects")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    prefix = "deploy/one" if request.param == "s3-prefixed" else ""
    return S3Storage(bucket, prefix, endpoint)


def test_put_get_round_trip(store: Storage) -> None:
    data = bytes(range(256)) * 64
    store.put("jobs/j1/inputs/content.png", data, "image/png")
    assert store.get("jobs/j1/inputs/content.png") == data
    store.put("jobs/j1/inputs/content.png", b"second")  # overwrite
    assert store.get("jobs/j1/inputs/content.png") == b"second"
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_missing_key_raises_object_not_found(store: Storage) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.get("jobs/nope/result.png")
    assert isinstance(info.value, KeyError)
    assert info.value.args == ("jobs/nope/result.png",)


def test_a_folder_is_not_an_object(store: Storage) -> None:
    store.put("jobs/j1/result.png", b"x")
    assert not store.exists("jobs/j1")
    with pytest.raises(ObjectNotFound):
        store.get("jobs/j1")


def test_exists(store: Storage) -> None:
    assert not store.exists("jobs/j1/result.png")
    store.put("jobs/j1/result.png", b"x")
    assert store.exists("jobs/j1/result.png")
    assert not store.exists("jobs/j1/result.pn")
    assert not store.exists("jobs/j2/result.png")


def test_list_is_sorted_and_scoped(store: Storage) -> None:
    keys = [
        "jobs/a/snapshots/000010.png",
        "jobs/a/inputs/style-1.png",
        "jobs/a/result.png",
        "jobs/a/inputs/content.png",
        "jobs/a/snapshots/000002.png",
    ]
    for key in keys:
        store.put(key, key.encode())
    store.put("jobs/ab/result.png", b"neighbour")  # shares the string prefix "jobs/a"
    store.put("jobs/b/result.png", b"other")
    store.put("elsewhere.txt", b"other")

    assert store.list("jobs/a/") == sorted(keys)
    assert store.list("jobs/a/snapshots/") == [
        "jobs/a/snapshots/000002.png",
        "jobs/a/snapshots/000010.png",
    ]
    assert store.list("jobs/b/") == ["jobs/b/result.png"]
    assert store.list("jobs/none/") == []
    assert store.list("") == sorted([*keys, "jobs/ab/result.png", "jobs/b/result.png",
                                     "elsewhere.txt"])  # fmt: skip


def test_delete_prefix_counts_and_removes_only_that_prefix(store: Storage) -> None:
    doomed = ["jobs/a/result.png", "jobs/a/inputs/content.png", "jobs/a/snapshots/000001.png"]
    kept = ["jobs/ab/result.png", "jobs/b/result.png", "jobs/a.txt"]
    for key in doomed + kept:
        store.put(key, b"x")
    assert store.delete_prefix("jobs/a/snapshots/") == 1
    assert not store.exists("jobs/a/snapshots/000001.png")
    assert store.delete_prefix("jobs/a/") == 2
    for key in doomed:
        assert not store.exists(key)
    for key in kept:
        assert store.get(key) == b"x"
    assert store.list("jobs/a/") == []
    assert store.delete_prefix("jobs/a/") == 0


def test_check_passes(store: Storage) -> None:
    store.check()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(store: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="bad object key"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="bad object key"):
        store.get(key)
    with pytest.raises(ValueError, match="bad object key"):
        store.exists(key)
    assert store.list("") == []


# ---- the folder ------------------------------------------------------------------------------


def test_file_storage_keeps_no_temp_files(tmp_path: Path) -> None:
    store = FileStorage(tmp_path)
    for i in range(5):
        store.put("jobs/j/snapshots/x.png", f"v{i}".encode())
    store.put("jobs/j/result.png", b"r")
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    assert store.get("jobs/j/snapshots/x.png") == b"v4"


def test_file_storage_list_ignores_temp_files(tmp_path: Path) -> None:
    store = FileStorage(tmp_path)
    store.put("jobs/j/result.png", b"r")
    (tmp_path / "jobs" / "j" / ".tmp-half-written").write_bytes(b"partial")
    assert store.list("jobs/j/") == ["jobs/j/result.png"]
    assert store.delete_prefix("jobs/j/") == 1
    assert (tmp_path / "jobs" / "j" / ".tmp-half-written").exists()  # not ours to count


def test_file_storage_failed_write_keeps_the_old_object(tmp_path: Path) -> None:
    store = FileStorage(tmp_path)
    store.put("jobs/j/result.png", b"good")
    with pytest.raises(TypeError):
        store.put("jobs/j/result.png", "not bytes")  # type: ignore[arg-type]
    assert store.get("jobs/j/result.png") == b"good"
    assert [p.name for p in (tmp_path / "jobs" / "j").iterdir()] == ["result.png"]


def test_file_storage_stays_under_its_root(tmp_path: Path) -> None:
    store = FileStorage(tmp_path / "root")
    store.put("jobs/j/result.png", b"r")
    assert (tmp_path / "root" / "jobs" / "j" / "result.png").read_bytes() == b"r"
    with pytest.raises(ValueError):
        store.put("../outside", b"x")
    assert not (tmp_path / "outside").exists()


def test_file_storage_check_creates_the_folder(tmp_path: Path) -> None:
    store = FileStorage(tmp_path / "not" / "yet")
    store.check()
    assert (tmp_path / "not" / "yet").is_dir()


# ---- S3 --------------------------------------------------------------------------------------


def test_s3_prefix_is_where_objects_live(s3_endpoint: str, s3_bucket: str) -> None:
    raw = boto3.client("s3", endpoint_url=s3_endpoint)
    raw.put_object(Bucket=s3_bucket, Key="jobs/a/result.png", Body=b"outside the prefix")
    store = S3Storage(s3_bucket, "/deploy/one/", s3_endpoint)
    store.put("jobs/a/result.png", b"inside", "image/png")

    head = raw.head_object(Bucket=s3_bucket, Key="deploy/one/jobs/a/result.png")
    assert head["ContentType"] == "image/png"
    assert store.get("jobs/a/result.png") == b"inside"
    assert store.list("jobs/") == ["jobs/a/result.png"]
    assert store.delete_prefix("jobs/") == 1
    listed = raw.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert [obj["Key"] for obj in listed] == ["jobs/a/result.png"]


def test_s3_check_on_a_missing_bucket_raises(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Storage(s3_bucket + "-missing", "", s3_endpoint)
    with pytest.raises(ClientError):
        store.check()


# ---- storage_from_url ------------------------------------------------------------------------


def test_file_url_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = storage_from_url("file://./relative/objects")
    assert isinstance(store, FileStorage)
    assert store.root == tmp_path / "relative" / "objects"


def test_file_url_absolute(tmp_path: Path) -> None:
    store = storage_from_url(f"file://{tmp_path / 'abs'}")
    assert isinstance(store, FileStorage)
    assert store.root == tmp_path / "abs"
    store.put("k", b"v")
    assert (tmp_path / "abs" / "k").read_bytes() == b"v"


@pytest.mark.parametrize("name", ["run#1", "what?", "a b", "50%25"])
def test_default_storage_url_keeps_the_whole_var_dir(tmp_path: Path, name: str) -> None:
    # load_settings builds file://<var dir>/objects from STYLEQUEUE_VAR_DIR verbatim.
    var_dir = tmp_path / name
    settings = load_settings({"STYLEQUEUE_VAR_DIR": str(var_dir)})
    store = storage_from_url(settings.storage_url)
    assert isinstance(store, FileStorage)
    assert store.root == var_dir / "objects"
    store.put("jobs/j/result.png", b"r")
    assert (var_dir / "objects" / "jobs" / "j" / "result.png").read_bytes() == b"r"


def test_file_url_without_slashes(tmp_path: Path) -> None:
    store = storage_from_url(f"file:{tmp_path / 'x'}")
    assert isinstance(store, FileStorage)
    assert store.root == tmp_path / "x"


def test_s3_url(s3_endpoint: str, s3_bucket: str) -> None:
    store = storage_from_url(f"s3://{s3_bucket}/team/objects", s3_endpoint)
    assert isinstance(store, S3Storage)
    assert (store.bucket, store.prefix) == (s3_bucket, "team/objects/")
    store.put("k", b"v")
    raw = boto3.client("s3", endpoint_url=s3_endpoint)
    assert raw.get_object(Bucket=s3_bucket, Key="team/objects/k")["Body"].read() == b"v"
    bare = storage_from_url(f"s3://{s3_bucket}", s3_endpoint)
    assert isinstance(bare, S3Storage)
    assert bare.prefix == ""
    assert bare.get("team/objects/k") == b"v"


@pytest.mark.parametrize("url", ["http://example.com/x", "/var/objects", "ftp://h/p", "s3:///p"])
def test_bad_storage_urls_name_the_variable(url: str) -> None:
    with pytest.raises(ValueError, match="STYLEQUEUE_STORAGE_URL"):
        storage_from_url(url)


def test_get_storage_reuses_one_store_per_url(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one = make_settings(storage_url=f"file://{tmp_path / 'one'}")
    two = make_settings(storage_url=f"file://{tmp_path / 'two'}")
    assert get_storage(one) is get_storage(one)
    assert get_storage(one) is not get_storage(two)
    assert get_storage(two).root == tmp_path / "two"  # type: ignore[attr-defined]


def test_file_storage_delete_prefix_leaves_no_empty_folder(tmp_path: Path) -> None:
    """A bucket keeps no folders: neither does the folder store once a prefix is emptied
    (the job's own folder included); folders of other prefixes stay."""
    store = FileStorage(tmp_path)
    store.put("jobs/a/attempts/1/snapshots/000004.png", b"s")
    store.put("jobs/a/inputs/content.png", b"c")
    store.put("jobs/b/inputs/content.png", b"c")
    assert store.delete_prefix("jobs/a/attempts/1/") == 1
    assert not (tmp_path / "jobs" / "a" / "attempts").exists()
    assert store.delete_prefix("jobs/a/") == 1
    assert not (tmp_path / "jobs" / "a").exists()
    assert (tmp_path / "jobs" / "b" / "inputs" / "content.png").exists()
    store.put("jobs/a/inputs/content.png", b"again")  # the folder comes back when needed
    assert store.get("jobs/a/inputs/content.png") == b"again"


def test_file_storage_delete_prefix_unfinished_takes_temporary_files_too(tmp_path: Path) -> None:
    store = FileStorage(tmp_path)
    store.put("jobs/j/result.png", b"r")
    (tmp_path / "jobs" / "j" / ".tmp-killed-mid-write").write_bytes(b"partial")
    assert store.delete_prefix("jobs/j/", unfinished=True) == 1
    assert not (tmp_path / "jobs" / "j").exists()
