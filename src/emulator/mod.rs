//! Local emulator of the signaling service (being written).
