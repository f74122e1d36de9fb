"""The formats asa-export writes beyond the hub model folder: ``onnx`` (`asa.api.exports.onnx`) and
``nnunet-results`` (`asa.api.exports.nnunet_results`)."""
