"""From a run dir to a shipped student: export to ONNX (simplified, stamped, maybe
int8), the validation gate, latency and footprints, and report.json.

May use what ``method/`` uses, not ``method/`` itself."""
