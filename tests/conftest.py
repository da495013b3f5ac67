"""pytest set-up shared by every test.

trial's ``TestCase.mktemp`` makes paths relative to the working directory
(trial itself runs in ``_trial_temp``); under pytest we run from a fresh
temporary directory too, so tests never litter the checkout.
"""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _work_in_a_temporary_directory(tmp_path_factory):
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)
