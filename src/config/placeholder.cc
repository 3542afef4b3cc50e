// Placeholder so the config module links before its first source lands.
namespace runewarp::config {}
