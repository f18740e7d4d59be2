//! AWS side of the client: SigV4, credentials, control plane, endpoint cache (being written).
