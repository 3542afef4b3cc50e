// Placeholder so the cli module links before its first source lands.
namespace runewarp::cli {}
