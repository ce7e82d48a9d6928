"""After promotion: score with the champion, measure drift and realised performance, request retrains.

- :mod:`.scoring`: the champion loaded with the runtime recorded on its version (ONNX or pyfunc);
- :mod:`.drift`: drift against the champion's training snapshot, prediction drift, the decision;
- :mod:`.labels`: realised performance once outcomes arrive;
- :mod:`.store`: the predictions and monitoring tables in the warehouse (one transaction per run);
- :mod:`.history`: the drift and realised-metric history as JSON-able data (for the dashboard);
- :mod:`.dag`: the ``score_<pipeline>`` DAG.
"""
