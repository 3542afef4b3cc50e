// Placeholder so the quic module links before its first source lands.
namespace runewarp::quic {}
