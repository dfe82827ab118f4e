"""One yes/no rule (stylequeue.shared.text.parse_bool) wherever the API reads a yes/no word:
the ``?download`` argument and boolean form fields accept the same words, in any case."""

from __future__ import annotations

import pytest

from stylequeue.shared import keys
from stylequeue.shared.params import ParamError, TransferParams
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import Storage
from stylequeue.shared.text import FALSE_WORDS, TRUE_WORDS
from tests.web import images
from tests.web.helpers import ALICE, error_of, insert_job, update_job

YES = [*TRUE_WORDS, "ON", "Yes", "True"]
NO = [*FALSE_WORDS, "OFF", "No", "False", ""]


@pytest.fixture
def result_url(settings: Settings, storage: Storage) -> str:
    job_id = insert_job(settings, status="succeeded", finished_at=utcnow())
    storage.put(keys.result_key(job_id, attempt=0), images.png((8, 8), "red"), "image/png")
    update_job(settings, job_id, result_key=keys.result_key(job_id, attempt=0))
    return f"/api/v1/jobs/{job_id}/result"


@pytest.mark.parametrize("word", YES)
def test_download_yes_words_ask_for_an_attachment(client, result_url: str, word: str) -> None:
    response = client.get(f"{result_url}?download={word}", headers=ALICE)
    assert response.status_code == 200
    assert response.headers.get("Content-Disposition", "").startswith("attachment;")


@pytest.mark.parametrize("word", NO)
def test_download_no_words_show_it_inline(client, result_url: str, word: str) -> None:
    response = client.get(f"{result_url}?download={word}", headers=ALICE)
    assert response.status_code == 200
    assert "Content-Disposition" not in response.headers


@pytest.mark.parametrize("word", ["maybe", "2", "y"])
def test_download_other_words_are_a_400_naming_it(client, result_url: str, word: str) -> None:
    response = client.get(f"{result_url}?download={word}", headers=ALICE)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == ("invalid_parameter", "download")
    assert word in error["message"]


@pytest.mark.parametrize(
    ("word", "value"), [(w, True) for w in YES] + [(w, False) for w in NO[:-1]]
)
def test_form_booleans_take_the_same_words(word: str, value: bool) -> None:
    params = TransferParams.from_inputs({"preserve_colors": word}, n_styles=1)
    assert params.preserve_colors is value


@pytest.mark.parametrize("word", ["maybe", "2", "y"])
def test_form_booleans_refuse_other_words(word: str) -> None:
    with pytest.raises(ParamError) as info:
        TransferParams.from_inputs({"preserve_colors": word}, n_styles=1)
    assert info.value.field == "preserve_colors"
