"""The SageMaker XGBoost image table is data (``data/sagemaker_images.json``) that names its source."""

from __future__ import annotations

import json
import re

import pytest

from airflow_retrain.training import sagemaker_catalog
from airflow_retrain.training.sagemaker_catalog import IMAGES_FILE, UnknownImageError, xgboost_image_uri


def test_the_table_is_a_data_file_naming_its_source():
    data = json.loads(IMAGES_FILE.read_text())
    assert "image_uri_config/xgboost.json" in data["_source"]
    assert data["registries"] and all(re.fullmatch(r"\d{12}", a) for a in data["registries"].values())
    assert sagemaker_catalog.DEFAULT_XGBOOST_VERSION in data["versions"]


def test_image_uri_per_region_and_partition():
    # The value the SageMaker SDK (3.27.0) gives for image_uris.retrieve("xgboost", "us-east-1", "1.7-1").
    assert xgboost_image_uri("us-east-1") == "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    assert xgboost_image_uri("eu-west-1", "1.5-1") == "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:1.5-1"
    with pytest.raises(UnknownImageError, match=r"version '9.9-9'; known: 1.0-1"):
        xgboost_image_uri("us-east-1", "9.9-9")
    with pytest.raises(UnknownImageError, match="region 'xx-nowhere-1'"):
        xgboost_image_uri("xx-nowhere-1")
