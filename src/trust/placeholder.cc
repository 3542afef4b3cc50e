// Placeholder so the trust module links before its first source lands.
namespace runewarp::trust {}
