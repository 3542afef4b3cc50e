// Placeholder so the core module links before its first source lands.
namespace runewarp::core {}
