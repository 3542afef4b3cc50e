// Placeholder so the obs module links before its first source lands.
namespace runewarp::obs {}
