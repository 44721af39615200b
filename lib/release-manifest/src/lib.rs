//! Release manifests, chunked payloads, signing keys and threshold signatures
