// Placeholder so the proto module links before its first source lands.
namespace runewarp::proto {}
