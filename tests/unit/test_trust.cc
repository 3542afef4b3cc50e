// Trust module: identity vectors, the DER walker, material files and key modes, Server CA and
// Public hostname certificate material.
#include <criterion/criterion.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/file.hh"
#include "tests/support/temp_tree.hh"
#include "trust/anchors.hh"
#include "trust/cert_expiry.hh"
#include "trust/client_identity.hh"
#include "trust/gnutls_util.hh"
#include "trust/identity.hh"
#include "trust/material.hh"
#include "trust/public_cert.hh"
#include "trust/server_cert.hh"
#include "trust/x509_util.hh"

// Criterion keeps the operands' pointers past the full expression: copy them first.
#define EXPECT_STR_EQ(a, b)                           \
    do {                                              \
        std::string lhs_ = (a);                       \
        std::string rhs_ = (b);                       \
        cr_assert_str_eq(lhs_.c_str(), rhs_.c_str()); \
    } while (0)
#define EXPECT_STR_NEQ(a, b)                           \
    do {                                               \
        std::string lhs_ = (a);                        \
        std::string rhs_ = (b);                        \
        cr_assert_str_neq(lhs_.c_str(), rhs_.c_str()); \
    } while (0)

using namespace runewarp::trust;

namespace {

std::string g_dir;

std::vector<std::uint8_t> unhex(std::string_view hex) {
    std::vector<std::uint8_t> out;
    auto nib = [](char c) -> int { return c <= '9' ? c - '0' : c - 'a' + 10; };
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.push_back(static_cast<std::uint8_t>(nib(hex[i]) << 4 | nib(hex[i + 1])));
    }
    return out;
}

std::span<const std::uint8_t> bytes(const std::vector<std::uint8_t>& v) {
    return {v.data(), v.size()};
}

void setup_dir() {
    g_dir = runewarp::test::make_temp_tree("runewarp-trust");
    cr_assert(!g_dir.empty());
}

void teardown_dir() {
    runewarp::test::remove_temp_tree(g_dir);
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    cr_assert_eq(stat(path.c_str(), &st), 0, "stat %s: %s", path.c_str(), std::strerror(errno));
    return st.st_mode & 07777;
}

std::string slurp(const std::string& path) {
    auto r = runewarp::core::read_file(path);
    cr_assert(r.ok(), "%s", r.ok() ? "" : r.error().message.c_str());
    return *r;
}

// Replaces a material file; keys are written 0600 like the material commands write them.
void spit(const std::string& path, const std::string& text, mode_t mode = 0644) {
    auto r = replace_file(path, text, mode);
    cr_assert(r.ok(), "%s", r.ok() ? "" : r.error().message.c_str());
}

// A DER certificate made by GnuTLS for `key` (self-signed, minimal profile).
std::vector<std::uint8_t> make_cert_der(gnutls_x509_privkey_t key) {
    std::time_t now = std::time(nullptr);
    auto crt = new_crt(key, now - 60, now + 3600);
    cr_assert(crt.ok());
    const char cn[] = "walker.example.test";
    cr_assert_eq(gnutls_x509_crt_set_dn_by_oid(crt->get(), GNUTLS_OID_X520_COMMON_NAME, 0, cn,
                                               sizeof cn - 1),
                 0);
    cr_assert_eq(gnutls_x509_crt_sign2(crt->get(), crt->get(), key, GNUTLS_DIG_UNKNOWN, 0), 0);
    OwnedDatum der;
    cr_assert_eq(gnutls_x509_crt_export2(crt->get(), GNUTLS_X509_FMT_DER, der.out()), 0);
    return std::vector<std::uint8_t>(der.get().data, der.get().data + der.get().size);
}

std::string pubkey_spki_hex(gnutls_x509_privkey_t key) {
    gnutls_privkey_t priv = nullptr;
    gnutls_pubkey_t pub = nullptr;
    cr_assert_eq(gnutls_privkey_init(&priv), 0);
    cr_assert_eq(gnutls_privkey_import_x509(priv, key, 0), 0);
    cr_assert_eq(gnutls_pubkey_init(&pub), 0);
    cr_assert_eq(gnutls_pubkey_import_privkey(pub, priv, 0, 0), 0);
    OwnedDatum der;
    cr_assert_eq(gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, der.out()), 0);
    std::string hex;
    for (unsigned i = 0; i < der.get().size; ++i) {
        char b[3];
        std::snprintf(b, sizeof b, "%02x", der.get().data[i]);
        hex += b;
    }
    gnutls_pubkey_deinit(pub);
    gnutls_privkey_deinit(priv);
    return hex;
}

std::string hex_of(std::span<const std::uint8_t> s) {
    std::string hex;
    for (std::uint8_t c : s) {
        char b[3];
        std::snprintf(b, sizeof b, "%02x", c);
        hex += b;
    }
    return hex;
}

}  // namespace

TestSuite(trust, .init = setup_dir, .fini = teardown_dir);

// ---- identity -------------------------------------------------------------------------------

Test(trust, ed25519_rfc8032_test1_vector) {
    auto spki = unhex(
        "302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    cr_assert_eq(spki.size(), 44u);
    EXPECT_STR_EQ(identity_of_spki(bytes(spki)).c_str(),
                  "06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9");
}

Test(trust, ecdsa_p256_rfc6979_vector) {
    std::string hex =
        "3059301306072a8648ce3d020106082a8648ce3d03010703420004"
        "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
        "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";
    auto spki = unhex(hex);
    cr_assert_eq(spki.size(), 91u);
    EXPECT_STR_EQ(identity_of_spki(bytes(spki)).c_str(),
                  "5a7a78cca4a0f420d9bc62bb669c3c2759e39f723d3ae10dcbe0f0815a07ecd4");
}

Test(trust, identity_validation) {
    cr_assert(
        is_valid_identity("06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9"));
    cr_assert(
        !is_valid_identity("06E3FD8FDA29BB60AB59557DE61EDB0AECDB231134BE30E75B455F8E1B792FA9"));
    cr_assert(
        !is_valid_identity("06:e3:fd:8f:da:29:bb:60:ab:59:55:7d:e6:1e:db:0a:ec:db:23:11:34:be"
                           ":30:e7:5b:45:5f:8e:1b:79:2f:a9"));
    cr_assert(
        !is_valid_identity("06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa"));
    cr_assert(
        !is_valid_identity("06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9 "));
    cr_assert(
        !is_valid_identity("g6e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9"));
    cr_assert(!is_valid_identity(""));
}

Test(trust, walker_spki_equals_pubkey_export) {
    for (int algo = 0; algo < 2; ++algo) {
        auto key = algo == 0 ? generate_ed25519_key() : generate_p256_key();
        cr_assert(key.ok());
        auto der = make_cert_der(key->get());
        auto spki = find_certificate_spki(bytes(der));
        cr_assert(spki.ok(), "%s", spki.ok() ? "" : spki.error().message.c_str());
        EXPECT_STR_EQ(hex_of(*spki).c_str(), pubkey_spki_hex(key->get()).c_str());
        auto from_cert = identity_of_certificate_der(bytes(der));
        auto from_key = identity_of_privkey(key->get());
        cr_assert(from_cert.ok() && from_key.ok());
        EXPECT_STR_EQ(from_cert->c_str(), from_key->c_str());
        cr_assert(is_valid_identity(*from_cert));
        if (algo == 0) {
            cr_assert_eq(spki->size(), 44u);
            cr_assert(hex_of(*spki).starts_with("302a300506032b6570032100"));
        }
    }
}

Test(trust, walker_rejects_truncated_and_corrupted_certificates) {
    auto key = generate_p256_key();
    cr_assert(key.ok());
    auto der = make_cert_der(key->get());
    // Every truncation fails cleanly (each in its own exact-size heap buffer, so ASan sees any
    // read past the end).
    for (std::size_t n = 0; n < der.size(); ++n) {
        std::vector<std::uint8_t> cut(der.begin(), der.begin() + static_cast<long>(n));
        cr_assert(!find_certificate_spki(bytes(cut)).ok(), "truncated to %zu accepted", n);
    }
    // Trailing garbage is rejected.
    auto longer = der;
    longer.push_back(0);
    cr_assert(!find_certificate_spki(bytes(longer)).ok());
    // Single-byte corruptions and pseudo-random mutations never crash; a success always
    // points inside the input.
    std::uint32_t seed = 0x2545f491u;
    auto rnd = [&seed]() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        return seed;
    };
    for (std::size_t i = 0; i < der.size(); ++i) {
        for (std::uint8_t v : {std::uint8_t{0x00}, std::uint8_t{0x80}, std::uint8_t{0xff},
                               std::uint8_t{0x84}, std::uint8_t{0x1f}}) {
            auto bad = der;
            bad[i] = v;
            auto r = find_certificate_spki(bytes(bad));
            if (r.ok()) {
                cr_assert(r->data() >= bad.data() &&
                          r->data() + r->size() <= bad.data() + bad.size());
            }
        }
    }
    for (int round = 0; round < 4000; ++round) {
        auto bad = der;
        int flips = 1 + static_cast<int>(rnd() % 8);
        for (int f = 0; f < flips; ++f) {
            bad[rnd() % bad.size()] = static_cast<std::uint8_t>(rnd());
        }
        if (rnd() % 4 == 0) bad.resize(rnd() % bad.size());
        auto r = find_certificate_spki(bytes(bad));
        if (r.ok()) {
            cr_assert(r->data() >= bad.data() && r->data() + r->size() <= bad.data() + bad.size());
        }
    }
    // Hand-made hostile shapes: indefinite, oversized and non-minimal lengths.
    for (const char* hex :
         {"3080", "30850100000000", "3084ffffffff", "308100", "30", "", "3003020100",
          "30053003020100", "300da003020102020101300030003000", "3081023000"}) {
        auto v = unhex(hex);
        cr_assert(!find_certificate_spki(bytes(v)).ok(), "%s accepted", hex);
    }
}

// ---- material files -------------------------------------------------------------------------

Test(trust, material_files_have_their_modes_and_replace_atomically) {
    umask(022);
    std::string dir = g_dir + "/a/b/material";
    cr_assert(ensure_dir(dir, 0700).ok());
    cr_assert_eq(mode_of(dir), 0700u);
    std::string secret = dir + "/secret.key";
    cr_assert(write_new_file(secret, "one", 0600).ok());
    cr_assert_eq(mode_of(secret), 0600u);
    cr_assert(!write_new_file(secret, "two", 0600).ok(), "O_EXCL refuses an existing file");
    EXPECT_STR_EQ(slurp(secret).c_str(), "one");

    umask(077);  // the mode is exact whatever the umask
    std::string pub = dir + "/public.crt";
    cr_assert(write_new_file(pub, "x", 0644).ok());
    cr_assert_eq(mode_of(pub), 0644u);
    cr_assert(replace_file(secret, "three", 0600).ok());
    EXPECT_STR_EQ(slurp(secret).c_str(), "three");
    cr_assert_eq(mode_of(secret), 0600u);
    umask(022);

    // No temporary file is left behind.
    int entries = 0;
    DIR* d = opendir(dir.c_str());
    cr_assert(d != nullptr);
    while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n == "." || n == "..") continue;
        cr_assert(n.find("runewarp-tmp") == std::string::npos, "left over: %s", n.c_str());
        ++entries;
    }
    closedir(d);
    cr_assert_eq(entries, 2);

    cr_assert(!ensure_dir(secret, 0700).ok(), "a file is not a directory");
}

// ---- client identity ------------------------------------------------------------------------

Test(trust, client_identity_init_writes_valid_material) {
    umask(022);
    std::string dir = g_dir + "/identity";
    auto init = init_client_identity(dir);
    cr_assert(init.ok(), "%s", init.ok() ? "" : init.error().message.c_str());
    cr_assert(init->created);
    cr_assert(is_valid_identity(init->identity));
    cr_assert_eq(mode_of(dir), 0700u);
    cr_assert_eq(mode_of(dir + "/client.key"), 0600u);
    cr_assert_eq(mode_of(dir + "/client.crt"), 0644u);
    cr_assert_eq(mode_of(dir + "/client-identity.txt"), 0644u);
    EXPECT_STR_EQ(slurp(dir + "/client-identity.txt").c_str(), init->identity.c_str());
    cr_assert(slurp(dir + "/client.key").starts_with("-----BEGIN PRIVATE KEY-----\n"));
    cr_assert(slurp(dir + "/client.crt").starts_with("-----BEGIN CERTIFICATE-----\n"));

    // The certificate profile: Ed25519, SAN runewarp-client, KU digitalSignature, EKU clientAuth.
    auto crt = import_crt_pem(slurp(dir + "/client.crt"), "client.crt");
    cr_assert(crt.ok());
    gnutls_x509_crt_t c = crt->get();
    cr_assert_eq(gnutls_x509_crt_get_version(c), 3);
    cr_assert_eq(gnutls_x509_crt_get_pk_algorithm(c, nullptr), GNUTLS_PK_EDDSA_ED25519);
    cr_assert_eq(gnutls_x509_crt_get_signature_algorithm(c), GNUTLS_SIGN_EDDSA_ED25519);
    char san[64];
    std::size_t san_size = sizeof san;
    cr_assert_eq(gnutls_x509_crt_get_subject_alt_name(c, 0, san, &san_size, nullptr),
                 GNUTLS_SAN_DNSNAME);
    EXPECT_STR_EQ(san, "runewarp-client");
    unsigned ku = 0;
    cr_assert_geq(gnutls_x509_crt_get_key_usage(c, &ku, nullptr), 0);
    cr_assert_eq(ku, static_cast<unsigned>(GNUTLS_KEY_DIGITAL_SIGNATURE));
    char oid[64];
    std::size_t oid_size = sizeof oid;
    cr_assert_eq(gnutls_x509_crt_get_key_purpose_oid(c, 0, oid, &oid_size, nullptr), 0);
    EXPECT_STR_EQ(oid, GNUTLS_KP_TLS_WWW_CLIENT);
    std::time_t nb = gnutls_x509_crt_get_activation_time(c);
    std::time_t na = gnutls_x509_crt_get_expiration_time(c);
    std::time_t now = std::time(nullptr);
    cr_assert(nb <= now - 55 && nb >= now - 120, "notBefore is now - 60 s");
    cr_assert_eq(na - nb, std::time_t{36'500} * 86'400);
    unsigned char serial[40];
    std::size_t serial_size = sizeof serial;
    cr_assert_eq(gnutls_x509_crt_get_serial(c, serial, &serial_size), 0);
    cr_assert(serial_size >= 1 && serial_size <= 20);
    cr_assert_eq(serial[0] & 0x80, 0, "serial is positive");

    auto loaded = load_client_identity(dir);
    cr_assert(loaded.ok());
    EXPECT_STR_EQ(loaded->c_str(), init->identity.c_str());
}

Test(trust, client_identity_init_is_idempotent_and_rotate_changes_it) {
    std::string dir = g_dir + "/identity";
    auto first = init_client_identity(dir);
    cr_assert(first.ok());
    std::string key_before = slurp(dir + "/client.key");
    auto second = init_client_identity(dir);
    cr_assert(second.ok());
    cr_assert(!second->created);
    EXPECT_STR_EQ(second->identity.c_str(), first->identity.c_str());
    EXPECT_STR_EQ(slurp(dir + "/client.key").c_str(), key_before.c_str());

    auto rotated = rotate_client_identity(dir);
    cr_assert(rotated.ok(), "%s", rotated.ok() ? "" : rotated.error().message.c_str());
    EXPECT_STR_NEQ(rotated->c_str(), first->identity.c_str());
    EXPECT_STR_NEQ(slurp(dir + "/client.key").c_str(), key_before.c_str());
    EXPECT_STR_EQ(slurp(dir + "/client-identity.txt").c_str(), rotated->c_str());
    cr_assert_eq(mode_of(dir + "/client.key"), 0600u);
    auto loaded = load_client_identity(dir);
    cr_assert(loaded.ok());
    EXPECT_STR_EQ(loaded->c_str(), rotated->c_str());
}

Test(trust, client_identity_partial_and_inconsistent_material_fail) {
    std::string dir = g_dir + "/identity";
    cr_assert(init_client_identity(dir).ok());
    std::string id = slurp(dir + "/client-identity.txt");

    // Whitespace around the stored identity is tolerated.
    spit(dir + "/client-identity.txt", id + "\n");
    cr_assert(load_client_identity(dir).ok());

    // Another identity: every read reports the mismatch.
    std::string other(64, 'a');
    spit(dir + "/client-identity.txt", other);
    auto bad = load_client_identity(dir);
    cr_assert(!bad.ok());
    std::string expect = "stored client identity " + other +
                         " does not match the current key or certificate identity " + id;
    EXPECT_STR_EQ(bad.error().message.c_str(), expect.c_str());
    auto init = init_client_identity(dir);
    cr_assert(!init.ok());
    cr_assert(init.error().message.find("incomplete or inconsistent") != std::string::npos);
    cr_assert(!rotate_client_identity(dir).ok(), "rotate needs valid material");

    // Uppercase is not an identity.
    std::string upper = id;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    spit(dir + "/client-identity.txt", upper);
    cr_assert(!load_client_identity(dir).ok());

    // A missing file: incomplete, with the file list.
    cr_assert_eq(unlink((dir + "/client.crt").c_str()), 0);
    init = init_client_identity(dir);
    cr_assert(!init.ok());
    const std::string& m = init.error().message;
    cr_assert(m.find("incomplete or inconsistent") != std::string::npos, "%s", m.c_str());
    cr_assert(m.find("missing: client.crt") != std::string::npos, "%s", m.c_str());
    cr_assert(m.find("client.key") != std::string::npos, "%s", m.c_str());

    // A key from elsewhere does not match the certificate.
    std::string dir2 = g_dir + "/identity2";
    cr_assert(init_client_identity(dir2).ok());
    std::string key2 = slurp(dir2 + "/client.key");
    std::string id2 = slurp(dir2 + "/client-identity.txt");
    cr_assert(init_client_identity(g_dir + "/identity3").ok());
    spit(g_dir + "/identity3/client.key", key2, 0600);
    auto mixed = load_client_identity(g_dir + "/identity3");
    cr_assert(!mixed.ok());
    cr_assert(mixed.error().message.find("does not match the current key or certificate identity " +
                                         id2) != std::string::npos,
              "%s", mixed.error().message.c_str());

    // Nothing at all: a hint to init.
    auto none = load_client_identity(g_dir + "/empty");
    cr_assert(!none.ok());
    cr_assert(none.error().message.find("runewarp client identity init") != std::string::npos);
}

// ---- Server certificate ---------------------------------------------------------------------

namespace {

const std::string kHost = "tunnel.example.test";

// GnuTLS verifies server.crt -> server-ca.crt for `host` as a TLS client would.
unsigned verify_with_gnutls(const std::string& dir, const std::string& host) {
    gnutls_certificate_credentials_t cred = nullptr;
    cr_assert_eq(gnutls_certificate_allocate_credentials(&cred), 0);
    auto crt = import_crt_pem(slurp(dir + "/server.crt"), "server.crt");
    auto ca = import_crt_pem(slurp(dir + "/server-ca.crt"), "server-ca.crt");
    cr_assert(crt.ok() && ca.ok());
    gnutls_x509_crt_t list[] = {crt->get()};
    gnutls_x509_crt_t cas[] = {ca->get()};
    unsigned status = 0;
    cr_assert_eq(gnutls_x509_crt_list_verify(list, 1, cas, 1, nullptr, 0, 0, &status), 0);
    if (gnutls_x509_crt_check_hostname(crt->get(), host.c_str()) == 0) {
        status |= GNUTLS_CERT_UNEXPECTED_OWNER;
    }
    gnutls_certificate_free_credentials(cred);
    return status;
}

}  // namespace

Test(trust, server_cert_init_writes_material_and_the_chain_verifies) {
    umask(022);
    std::string dir = g_dir + "/cert";
    auto s = init_server_cert(dir, kHost);
    cr_assert(s.ok(), "%s", s.ok() ? "" : s.error().message.c_str());
    EXPECT_STR_EQ(s->headline.c_str(), "Server certificate initialized");
    cr_assert_eq(mode_of(dir), 0755u);
    cr_assert_eq(mode_of(dir + "/state"), 0700u);
    cr_assert_eq(mode_of(dir + "/server.crt"), 0644u);
    cr_assert_eq(mode_of(dir + "/server.key"), 0600u);
    cr_assert_eq(mode_of(dir + "/server-ca.crt"), 0644u);
    cr_assert_eq(mode_of(dir + "/state/server-ca.key"), 0600u);
    cr_assert_eq(mode_of(dir + "/state/server-hostname.txt"), 0644u);
    EXPECT_STR_EQ(slurp(dir + "/state/server-hostname.txt").c_str(), kHost.c_str());
    cr_assert(slurp(dir + "/server.key").starts_with("-----BEGIN PRIVATE KEY-----\n"));

    cr_assert_eq(verify_with_gnutls(dir, kHost), 0u);
    cr_assert_neq(verify_with_gnutls(dir, "other.example.test"), 0u);
    auto v = verify_server_cert_dir(dir, kHost, true);
    cr_assert(v.ok(), "%s", v.ok() ? "" : v.error().message.c_str());
    cr_assert(!verify_server_cert_dir(dir, "other.example.test").ok());

    // Profiles: the CA (P-256, CA:TRUE, no path length) and the leaf for the hostname.
    auto ca = import_crt_pem(slurp(dir + "/server-ca.crt"), "ca");
    auto leaf = import_crt_pem(slurp(dir + "/server.crt"), "leaf");
    cr_assert(ca.ok() && leaf.ok());
    unsigned ca_flag = 0;
    int path_len = 0;
    cr_assert_eq(gnutls_x509_crt_get_basic_constraints(ca->get(), nullptr, &ca_flag, &path_len), 1);
    cr_assert_eq(ca_flag, 1u);
    cr_assert_lt(path_len, 0, "no path length");
    unsigned ku = 0;
    cr_assert_geq(gnutls_x509_crt_get_key_usage(ca->get(), &ku, nullptr), 0);
    cr_assert_eq(ku, static_cast<unsigned>(GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_CERT_SIGN |
                                           GNUTLS_KEY_CRL_SIGN));
    char cn[128];
    std::size_t cn_size = sizeof cn;
    cr_assert_eq(
        gnutls_x509_crt_get_dn_by_oid(ca->get(), GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cn_size),
        0);
    EXPECT_STR_EQ(cn, "Runewarp Server CA");
    cr_assert_eq(gnutls_x509_crt_get_pk_algorithm(ca->get(), nullptr), GNUTLS_PK_ECDSA);
    std::time_t ca_nb = gnutls_x509_crt_get_activation_time(ca->get());
    cr_assert_eq(gnutls_x509_crt_get_expiration_time(ca->get()) - ca_nb, 3650 * 86'400);

    cn_size = sizeof cn;
    cr_assert_eq(
        gnutls_x509_crt_get_dn_by_oid(leaf->get(), GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cn_size),
        0);
    EXPECT_STR_EQ(cn, kHost.c_str());
    cr_assert_eq(gnutls_x509_crt_get_signature_algorithm(leaf->get()), GNUTLS_SIGN_ECDSA_SHA256);
    cr_assert_geq(gnutls_x509_crt_get_key_usage(leaf->get(), &ku, nullptr), 0);
    cr_assert_eq(ku,
                 static_cast<unsigned>(GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_ENCIPHERMENT));
    char oid[64];
    std::size_t oid_size = sizeof oid;
    cr_assert_eq(gnutls_x509_crt_get_key_purpose_oid(leaf->get(), 0, oid, &oid_size, nullptr), 0);
    EXPECT_STR_EQ(oid, GNUTLS_KP_TLS_WWW_SERVER);
    unsigned char aki[64];
    std::size_t aki_size = sizeof aki;
    cr_assert_eq(gnutls_x509_crt_get_authority_key_id(leaf->get(), aki, &aki_size, nullptr), 0);
    std::time_t nb = gnutls_x509_crt_get_activation_time(leaf->get());
    cr_assert_eq(gnutls_x509_crt_get_expiration_time(leaf->get()) - nb, 90 * 86'400);
    std::time_t now = std::time(nullptr);
    cr_assert(nb <= now - 55 && nb >= now - 120);
    cr_assert_eq(s->not_before, nb);

    // Summary lines.
    std::string text = format_server_cert_summary(*s);
    cr_assert(text.starts_with("Server certificate initialized\nServer hostname: " + kHost +
                               "\nCertificate directory: " + dir + "\n"));
    cr_assert(text.find("Server certificate: " + dir + "/server.crt\n") != std::string::npos);
    cr_assert(text.find("Certificate lifetime: 90 days\n") != std::string::npos);
    cr_assert(text.find("Issued at (UTC): " + rfc3339_utc(nb) + "\n") != std::string::npos);
    cr_assert(text.find("Renew after (UTC): " + rfc3339_utc(nb + 60 * 86'400) + "\n") !=
              std::string::npos);
    EXPECT_STR_EQ(rfc3339_utc(1777629600).c_str(), "2026-05-01T10:00:00Z");
}

Test(trust, server_cert_init_idempotent_conflict_and_partial) {
    std::string dir = g_dir + "/cert";
    cr_assert(init_server_cert(dir, kHost).ok());
    std::string crt = slurp(dir + "/server.crt");
    auto again = init_server_cert(dir, kHost);
    cr_assert(again.ok());
    EXPECT_STR_EQ(again->headline.c_str(), "Server certificate material already exists");
    EXPECT_STR_EQ(slurp(dir + "/server.crt").c_str(), crt.c_str());

    auto other = init_server_cert(dir, "other.example.test");
    cr_assert(!other.ok());
    cr_assert(other.error().message.find("already belongs to Server hostname " + kHost) !=
              std::string::npos);

    cr_assert_eq(unlink((dir + "/server.key").c_str()), 0);
    auto partial = init_server_cert(dir, kHost);
    cr_assert(!partial.ok());
    const std::string& m = partial.error().message;
    cr_assert(m.find("incomplete or inconsistent") != std::string::npos, "%s", m.c_str());
    cr_assert(m.find("missing: server.key") != std::string::npos, "%s", m.c_str());
    cr_assert(!renew_server_cert(dir).ok());
    cr_assert(!verify_server_cert_dir(dir, kHost).ok());
    cr_assert(!renew_server_cert(g_dir + "/none").ok());
}

Test(trust, server_cert_renew_keeps_the_ca_and_rotate_replaces_it) {
    std::string dir = g_dir + "/cert";
    cr_assert(init_server_cert(dir, kHost).ok());
    std::string ca = slurp(dir + "/server-ca.crt");
    std::string ca_key = slurp(dir + "/state/server-ca.key");
    std::string leaf = slurp(dir + "/server.crt");
    std::string leaf_key = slurp(dir + "/server.key");

    auto renewed = renew_server_cert(dir);
    cr_assert(renewed.ok(), "%s", renewed.ok() ? "" : renewed.error().message.c_str());
    EXPECT_STR_EQ(renewed->headline.c_str(), "Server certificate renewed");
    EXPECT_STR_EQ(renewed->hostname.c_str(), kHost.c_str());
    EXPECT_STR_EQ(slurp(dir + "/server-ca.crt").c_str(), ca.c_str());
    EXPECT_STR_EQ(slurp(dir + "/state/server-ca.key").c_str(), ca_key.c_str());
    EXPECT_STR_NEQ(slurp(dir + "/server.crt").c_str(), leaf.c_str());
    EXPECT_STR_NEQ(slurp(dir + "/server.key").c_str(), leaf_key.c_str());
    cr_assert_eq(mode_of(dir + "/server.key"), 0600u);
    cr_assert_eq(verify_with_gnutls(dir, kHost), 0u);

    const std::string next = "next.example.test";
    auto rotated = rotate_server_ca(dir, next);
    cr_assert(rotated.ok(), "%s", rotated.ok() ? "" : rotated.error().message.c_str());
    EXPECT_STR_EQ(rotated->headline.c_str(), "Server certificate authority rotated");
    EXPECT_STR_NEQ(slurp(dir + "/server-ca.crt").c_str(), ca.c_str());
    EXPECT_STR_NEQ(slurp(dir + "/state/server-ca.key").c_str(), ca_key.c_str());
    EXPECT_STR_EQ(slurp(dir + "/state/server-hostname.txt").c_str(), next.c_str());
    cr_assert_eq(mode_of(dir + "/state/server-ca.key"), 0600u);
    cr_assert_eq(verify_with_gnutls(dir, next), 0u);
    cr_assert(verify_server_cert_dir(dir, next).ok());

    // A leaf from a foreign CA does not verify.
    std::string dir2 = g_dir + "/cert2";
    cr_assert(init_server_cert(dir2, next).ok());
    spit(dir + "/server-ca.crt", slurp(dir2 + "/server-ca.crt"));
    auto foreign = verify_server_cert_dir(dir, next);
    cr_assert(!foreign.ok());
    cr_assert(foreign.error().message.find("does not verify") != std::string::npos, "%s",
              foreign.error().message.c_str());
    // A leaf in place of the CA is refused as not a CA.
    spit(dir + "/server-ca.crt", slurp(dir + "/server.crt"));
    auto not_ca = verify_server_cert_dir(dir, next);
    cr_assert(!not_ca.ok());
    cr_assert(not_ca.error().message.find("not a CA") != std::string::npos);
    // A key that is not the leaf's.
    spit(dir + "/server-ca.crt", slurp(dir2 + "/server-ca.crt"));
    spit(dir + "/server.crt", slurp(dir2 + "/server.crt"));
    auto wrong_key = verify_server_cert_dir(dir, next);
    cr_assert(!wrong_key.ok());
    cr_assert(wrong_key.error().message.find("is not the key of") != std::string::npos);
}

// ---- certificate expiry ---------------------------------------------------------------------

Test(trust, expiry_level_warns_within_21_days_and_errs_once_expired) {
    const std::time_t now = 1'777'600'000;  // any instant
    const std::time_t day = kDaySeconds;
    auto at = [&](std::time_t not_after) { return expiry_level(now, not_after); };
    cr_assert_eq(at(now + 90 * day).level, ExpiryLevel::kValid);
    cr_assert_eq(at(now + 90 * day).days_left, 90);
    cr_assert_eq(at(now + 21 * day + 1).level, ExpiryLevel::kValid);
    cr_assert_eq(at(now + 21 * day).level, ExpiryLevel::kExpiring);
    cr_assert_eq(at(now + 21 * day).days_left, 21);
    cr_assert_eq(at(now + 12 * day + day / 2).days_left, 12, "whole days, rounded down");
    cr_assert_eq(at(now + 1).level, ExpiryLevel::kExpiring);
    cr_assert_eq(at(now + 1).days_left, 0);
    cr_assert_eq(at(now).level, ExpiryLevel::kExpired);
    cr_assert_eq(at(now - 3 * day).level, ExpiryLevel::kExpired);
    cr_assert_eq(at(now - 3 * day).days_left, 0);
    // The window is a parameter.
    cr_assert_eq(expiry_level(now, now + 5 * day, 3).level, ExpiryLevel::kValid);
    cr_assert_eq(expiry_level(now, now + 3 * day, 3).level, ExpiryLevel::kExpiring);
}

Test(trust, certificate_not_after_reads_the_first_certificate_of_a_pem) {
    auto key = generate_p256_key();
    cr_assert(key.ok());
    const std::time_t not_before = 1'700'000'000;
    const std::time_t not_after = not_before + 12 * kDaySeconds + 3600;
    auto crt = new_crt(key->get(), not_before, not_after);
    cr_assert(crt.ok());
    cr_assert_eq(gnutls_x509_crt_set_dn(crt->get(), "CN=expiry.example.test", nullptr), 0);
    cr_assert_eq(gnutls_x509_crt_sign2(crt->get(), crt->get(), key->get(), GNUTLS_DIG_SHA256, 0),
                 0);
    auto pem = export_crt_pem(crt->get());
    cr_assert(pem.ok());

    auto t = certificate_not_after(*pem, "inline");
    cr_assert(t.ok(), "%s", t.ok() ? "" : t.error().message.c_str());
    cr_assert_eq(*t, not_after);
    spit(g_dir + "/leaf.crt", *pem + *pem);
    auto f = certificate_file_not_after(g_dir + "/leaf.crt");
    cr_assert(f.ok(), "%s", f.ok() ? "" : f.error().message.c_str());
    cr_assert_eq(*f, not_after);

    cr_assert_not(certificate_not_after("not a certificate", "junk").ok());
    auto missing = certificate_file_not_after(g_dir + "/missing.crt");
    cr_assert_not(missing.ok());
    cr_assert(missing.error().message.find("missing.crt") != std::string::npos, "%s",
              missing.error().message.c_str());
}

// ---- private key modes and the material the daemons load -------------------------------------

Test(trust, private_keys_accessible_by_group_or_others_are_refused) {
    std::string id_dir = g_dir + "/identity";
    auto init = init_client_identity(id_dir);
    cr_assert(init.ok());
    std::string cert_dir = g_dir + "/cert";
    cr_assert(init_server_cert(cert_dir, kHost).ok());

    const std::string client_key = id_dir + "/client.key";
    const std::string server_key = cert_dir + "/server.key";
    for (mode_t bad : {0640u, 0604u, 0620u, 0644u, 0660u, 0601u}) {
        cr_assert_eq(chmod(client_key.c_str(), bad), 0);
        auto id = load_client_identity(id_dir);
        cr_assert(!id.ok(), "client.key mode %04o accepted", bad);
        const std::string& m = id.error().message;
        cr_assert(m.find(client_key) != std::string::npos, "names the file: %s", m.c_str());
        cr_assert(m.find("run `chmod 600 " + client_key + "`") != std::string::npos,
                  "names the fix: %s", m.c_str());

        cr_assert_eq(chmod(server_key.c_str(), bad), 0);
        auto cert = load_server_cert_dir(cert_dir, kHost);
        cr_assert(!cert.ok(), "server.key mode %04o accepted", bad);
        cr_assert(
            cert.error().message.find("run `chmod 600 " + server_key + "`") != std::string::npos,
            "%s", cert.error().message.c_str());
        // The material commands read keys by the same rule.
        cr_assert(!renew_server_cert(cert_dir).ok());
    }
    char mode_text[8];
    cr_assert_eq(chmod(client_key.c_str(), 0640), 0);
    std::snprintf(mode_text, sizeof mode_text, "%04o", 0640u);
    cr_assert(load_client_identity(id_dir).error().message.find(mode_text) != std::string::npos,
              "names the mode");

    // Owner-only modes load.
    for (mode_t good : {0600u, 0400u}) {
        cr_assert_eq(chmod(client_key.c_str(), good), 0);
        cr_assert_eq(chmod(server_key.c_str(), good), 0);
        auto files = load_client_identity_files(id_dir);
        cr_assert(files.ok(), "%s", files.ok() ? "" : files.error().message.c_str());
        EXPECT_STR_EQ(files->identity, init->identity);
        EXPECT_STR_EQ(files->key_pem, slurp(client_key));
        EXPECT_STR_EQ(files->cert_pem, slurp(id_dir + "/client.crt"));
        auto cert = load_server_cert_dir(cert_dir, kHost);
        cr_assert(cert.ok(), "%s", cert.ok() ? "" : cert.error().message.c_str());
        EXPECT_STR_EQ(cert->cert_pem, slurp(cert_dir + "/server.crt"));
        EXPECT_STR_EQ(cert->key_pem, slurp(server_key));
        EXPECT_STR_EQ(cert->cert_path, cert_dir + "/server.crt");
        cr_assert_gt(cert->validity.not_after, cert->validity.not_before);
    }

    // A CA key readable by others is refused when `renew` reads it.
    cr_assert_eq(chmod(server_key.c_str(), 0600), 0);
    cr_assert_eq(chmod((cert_dir + "/state/server-ca.key").c_str(), 0644), 0);
    auto renew = renew_server_cert(cert_dir);
    cr_assert(!renew.ok());
    cr_assert(renew.error().message.find("state/server-ca.key") != std::string::npos, "%s",
              renew.error().message.c_str());
}

Test(trust, ca_files_and_the_system_store) {
    std::string cert_dir = g_dir + "/cert";
    cr_assert(init_server_cert(cert_dir, kHost).ok());
    auto ca = load_ca_file(cert_dir + "/server-ca.crt");
    cr_assert(ca.ok(), "%s", ca.ok() ? "" : ca.error().message.c_str());
    EXPECT_STR_EQ(*ca, slurp(cert_dir + "/server-ca.crt"));

    spit(g_dir + "/empty.crt", "");
    auto empty = load_ca_file(g_dir + "/empty.crt");
    cr_assert(!empty.ok(), "a CA file without certificates is refused");
    spit(g_dir + "/garbage.crt",
         "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    cr_assert(!load_ca_file(g_dir + "/garbage.crt").ok());
    auto missing = load_ca_file(g_dir + "/missing.crt");
    cr_assert(!missing.ok());
    cr_assert(missing.error().message.find(g_dir + "/missing.crt") != std::string::npos);

    // `make deps` installs the distribution's CA bundle.
    auto n = count_system_trust_anchors();
    cr_assert(n.ok(), "%s", n.ok() ? "" : n.error().message.c_str());
    cr_assert_gt(*n, 0u, "the system trust store is empty: install ca-certificates");
}

// ---- Public hostname certificates (terminate mode) -------------------------------------------

namespace {

const std::string kApp = "app.example.test";
const std::string kApi = "api.example.test";

std::string leaf_crt(const std::string& dir, const std::string& host) {
    return dir + "/" + host + "/public.crt";
}
std::string leaf_key(const std::string& dir, const std::string& host) {
    return dir + "/" + host + "/public.key";
}

// GnuTLS verifies <host>/public.crt against public-ca.crt for `name` (default: `host`) as a
// Visitor would.
unsigned verify_public_leaf(const std::string& dir, const std::string& host,
                            std::string name = {}) {
    if (name.empty()) name = host;
    auto crt = import_crt_pem(slurp(leaf_crt(dir, host)), "public.crt");
    auto ca = import_crt_pem(slurp(dir + "/public-ca.crt"), "public-ca.crt");
    cr_assert(crt.ok() && ca.ok());
    gnutls_x509_crt_t list[] = {crt->get()};
    gnutls_x509_crt_t cas[] = {ca->get()};
    unsigned status = 0;
    cr_assert_eq(gnutls_x509_crt_list_verify(list, 1, cas, 1, nullptr, 0, 0, &status), 0);
    if (gnutls_x509_crt_check_hostname(crt->get(), name.c_str()) == 0) {
        status |= GNUTLS_CERT_UNEXPECTED_OWNER;
    }
    return status;
}

std::string error_of(const runewarp::Result<PublicCertMaterial>& r) {
    cr_assert(!r.ok(), "loaded although it should not");
    return r.error().message;
}

void expect_contains(const std::string& text, const std::string& needle) {
    cr_assert(text.find(needle) != std::string::npos, "`%s` not in `%s`", needle.c_str(),
              text.c_str());
}

}  // namespace

Test(trust, public_cert_init_from_nothing_writes_the_ca_and_a_leaf_with_exact_modes) {
    // A restrictive umask does not narrow the modes, nor a permissive one widen them.
    for (mode_t mask : {077u, 0u}) {
        umask(mask);
        std::string dir = g_dir + "/pc" + std::to_string(mask) + "/public-cert";
        auto s = init_public_cert(dir, {kApp});
        cr_assert(s.ok(), "%s", s.ok() ? "" : s.error().message.c_str());
        cr_assert(s->action == PublicCertAction::kInit);
        cr_assert(s->existing.empty());
        cr_assert_eq(s->issued.size(), 1u);
        EXPECT_STR_EQ(s->issued[0], kApp);
        cr_assert_eq(mode_of(dir), 0755u);
        cr_assert_eq(mode_of(dir + "/state"), 0700u);
        cr_assert_eq(mode_of(dir + "/public-ca.crt"), 0644u);
        cr_assert_eq(mode_of(dir + "/state/public-ca.key"), 0600u);
        cr_assert_eq(mode_of(dir + "/" + kApp), 0755u);
        cr_assert_eq(mode_of(leaf_crt(dir, kApp)), 0644u);
        cr_assert_eq(mode_of(leaf_key(dir, kApp)), 0600u);
        cr_assert(slurp(leaf_key(dir, kApp)).starts_with("-----BEGIN PRIVATE KEY-----\n"));
        cr_assert_eq(verify_public_leaf(dir, kApp), 0u);
        cr_assert_neq(verify_public_leaf(dir, kApp, kApi), 0u);

        // The CA has the CA profile and its own common name; the leaf is for the hostname.
        auto ca = import_crt_pem(slurp(dir + "/public-ca.crt"), "ca");
        auto leaf = import_crt_pem(slurp(leaf_crt(dir, kApp)), "leaf");
        cr_assert(ca.ok() && leaf.ok());
        char cn[128];
        std::size_t cn_size = sizeof cn;
        cr_assert_eq(gnutls_x509_crt_get_dn_by_oid(ca->get(), GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn,
                                                   &cn_size),
                     0);
        EXPECT_STR_EQ(cn, "Runewarp Public Hostname CA");
        unsigned ca_flag = 0;
        int path_len = 0;
        cr_assert_eq(gnutls_x509_crt_get_basic_constraints(ca->get(), nullptr, &ca_flag, &path_len),
                     1);
        cr_assert_eq(ca_flag, 1u);
        std::time_t ca_nb = gnutls_x509_crt_get_activation_time(ca->get());
        cr_assert_eq(gnutls_x509_crt_get_expiration_time(ca->get()) - ca_nb, 3650 * 86'400);
        char oid[64];
        std::size_t oid_size = sizeof oid;
        cr_assert_eq(gnutls_x509_crt_get_key_purpose_oid(leaf->get(), 0, oid, &oid_size, nullptr),
                     0);
        EXPECT_STR_EQ(oid, GNUTLS_KP_TLS_WWW_SERVER);
        std::time_t nb = gnutls_x509_crt_get_activation_time(leaf->get());
        cr_assert_eq(gnutls_x509_crt_get_expiration_time(leaf->get()) - nb, 90 * 86'400);
        std::time_t now = std::time(nullptr);
        cr_assert(nb <= now - 55 && nb >= now - 120);
        cr_assert_eq(s->not_before, nb);
        cr_assert_eq(s->not_after, nb + 90 * 86'400);

        auto m = load_public_cert(dir, kApp);
        cr_assert(m.ok(), "%s", m.ok() ? "" : m.error().message.c_str());
        EXPECT_STR_EQ(m->hostname, kApp);
        EXPECT_STR_EQ(m->cert_pem, slurp(leaf_crt(dir, kApp)));
        EXPECT_STR_EQ(m->key_pem, slurp(leaf_key(dir, kApp)));
        EXPECT_STR_EQ(m->cert_path, leaf_crt(dir, kApp));
        cr_assert_eq(m->not_before, nb);
        cr_assert_eq(m->not_after, nb + 90 * 86'400);
        cr_assert(!public_cert_absent(dir, kApp));
        cr_assert(public_cert_absent(dir, kApi));
    }
    umask(022);
}

Test(trust, public_cert_init_issues_from_the_existing_ca_and_reports_existing_material) {
    std::string dir = g_dir + "/public-cert";
    cr_assert(init_public_cert(dir, {kApp}).ok());
    const std::string ca = slurp(dir + "/public-ca.crt");
    const std::string ca_key = slurp(dir + "/state/public-ca.key");
    const std::string app = slurp(leaf_crt(dir, kApp));

    // CA present, api's leaf absent: api gets a leaf from that CA; app is reported as existing.
    auto s = init_public_cert(dir, {kApi, kApp});
    cr_assert(s.ok(), "%s", s.ok() ? "" : s.error().message.c_str());
    cr_assert_eq(s->existing.size(), 1u);
    EXPECT_STR_EQ(s->existing[0], kApp);
    cr_assert_eq(s->issued.size(), 1u);
    EXPECT_STR_EQ(s->issued[0], kApi);
    EXPECT_STR_EQ(slurp(dir + "/public-ca.crt"), ca);
    EXPECT_STR_EQ(slurp(dir + "/state/public-ca.key"), ca_key);
    EXPECT_STR_EQ(slurp(leaf_crt(dir, kApp)), app);
    cr_assert_eq(verify_public_leaf(dir, kApi), 0u);
    cr_assert_eq(mode_of(leaf_key(dir, kApi)), 0600u);
    auto api = load_public_cert(dir, kApi);
    cr_assert(api.ok());
    cr_assert_eq(s->not_before, api->not_before, "the timestamps are the new leaf's");

    // Everything present: nothing written, the first hostname's window reported.
    auto again = init_public_cert(dir, {kApp, kApi});
    cr_assert(again.ok(), "%s", again.ok() ? "" : again.error().message.c_str());
    cr_assert_eq(again->existing.size(), 2u);
    cr_assert(again->issued.empty());
    auto app_m = load_public_cert(dir, kApp);
    cr_assert(app_m.ok());
    cr_assert_eq(again->not_before, app_m->not_before);
    cr_assert_eq(again->not_after, app_m->not_after);
    EXPECT_STR_EQ(slurp(dir + "/public-ca.crt"), ca);
    EXPECT_STR_EQ(slurp(leaf_crt(dir, kApp)), app);

    // Existing files that do not belong together are not reported as existing.
    spit(leaf_crt(dir, kApp), slurp(leaf_crt(dir, kApi)));
    auto mismatch = init_public_cert(dir, {kApp});
    cr_assert(!mismatch.ok());
    expect_contains(mismatch.error().message, "incomplete or inconsistent");
    expect_contains(mismatch.error().message, "is not the key of");
}

Test(trust, public_cert_init_refuses_every_half_present_pair_and_writes_nothing) {
    struct Case {
        const char* name;
        std::vector<std::string> remove;  // after a complete init of app
        std::vector<std::string> present;
        std::vector<std::string> missing;
    };
    const std::vector<Case> cases = {
        {"ca-crt-without-key", {"state/public-ca.key"}, {"public-ca.crt"}, {"state/public-ca.key"}},
        {"ca-key-without-crt", {"public-ca.crt"}, {"state/public-ca.key"}, {"public-ca.crt"}},
        {"leaf-crt-without-key",
         {kApp + "/public.key"},
         {kApp + "/public.crt"},
         {kApp + "/public.key"}},
        {"leaf-key-without-crt",
         {kApp + "/public.crt"},
         {kApp + "/public.key"},
         {kApp + "/public.crt"}},
        {"leaf-without-ca",
         {"public-ca.crt", "state/public-ca.key"},
         {kApp + "/public.crt", kApp + "/public.key"},
         {"public-ca.crt", "state/public-ca.key"}},
    };
    for (const Case& c : cases) {
        std::string dir = g_dir + "/" + c.name;
        cr_assert(init_public_cert(dir, {kApp}).ok());
        for (const std::string& f : c.remove) cr_assert_eq(unlink((dir + "/" + f).c_str()), 0);
        // api (nothing present) is listed first: the refusal still comes before any write.
        auto r = init_public_cert(dir, {kApi, kApp});
        cr_assert(!r.ok(), "%s: accepted", c.name);
        const std::string& m = r.error().message;
        expect_contains(
            m, "Public hostname certificate material in " + dir + " is incomplete or inconsistent");
        for (const std::string& f : c.present) expect_contains(m, f);
        std::string missing;
        for (const std::string& f : c.missing) missing += (missing.empty() ? "" : ", ") + f;
        expect_contains(m, "; missing: " + missing);
        expect_contains(m, "rerun `runewarp client public-cert init`");
        cr_assert(!path_exists(dir + "/" + kApi), "%s: api material was written", c.name);
        for (const std::string& f : c.missing) {
            cr_assert(!path_exists(dir + "/" + f), "%s: %s was recreated", c.name, f.c_str());
        }
    }
    cr_assert(!init_public_cert(g_dir + "/none", {}).ok(), "no hostname at all");
}

Test(trust, public_cert_renew_keeps_the_ca_and_needs_it) {
    std::string dir = g_dir + "/public-cert";
    auto none = renew_public_cert(dir, {kApp});
    cr_assert(!none.ok());
    expect_contains(none.error().message, "no Public hostname CA in " + dir);
    cr_assert(!path_exists(dir), "a refused renew writes nothing");

    cr_assert(init_public_cert(dir, {kApp, kApi}).ok());
    const std::string ca = slurp(dir + "/public-ca.crt");
    const std::string ca_key = slurp(dir + "/state/public-ca.key");
    const std::string app = slurp(leaf_crt(dir, kApp));
    const std::string app_key = slurp(leaf_key(dir, kApp));
    const std::string api = slurp(leaf_crt(dir, kApi));

    auto r = renew_public_cert(dir, {kApp});
    cr_assert(r.ok(), "%s", r.ok() ? "" : r.error().message.c_str());
    cr_assert(r->action == PublicCertAction::kRenew);
    cr_assert_eq(r->issued.size(), 1u);
    EXPECT_STR_EQ(r->issued[0], kApp);
    EXPECT_STR_EQ(slurp(dir + "/public-ca.crt"), ca);
    EXPECT_STR_EQ(slurp(dir + "/state/public-ca.key"), ca_key);
    EXPECT_STR_NEQ(slurp(leaf_crt(dir, kApp)), app);
    EXPECT_STR_NEQ(slurp(leaf_key(dir, kApp)), app_key);
    EXPECT_STR_EQ(slurp(leaf_crt(dir, kApi)), api);
    cr_assert_eq(mode_of(leaf_crt(dir, kApp)), 0644u);
    cr_assert_eq(mode_of(leaf_key(dir, kApp)), 0600u);
    cr_assert_eq(verify_public_leaf(dir, kApp), 0u);
    auto m = load_public_cert(dir, kApp);
    cr_assert(m.ok());
    cr_assert_eq(r->not_before, m->not_before);

    // A CA without its key cannot sign.
    cr_assert_eq(unlink((dir + "/state/public-ca.key").c_str()), 0);
    auto half = renew_public_cert(dir, {kApp});
    cr_assert(!half.ok());
    expect_contains(half.error().message, "incomplete or inconsistent");
    expect_contains(half.error().message, "missing: state/public-ca.key");
}

Test(trust, public_cert_rotate_ca_replaces_the_ca_and_reissues_every_leaf) {
    std::string dir = g_dir + "/public-cert";
    cr_assert(init_public_cert(dir, {kApi, kApp}).ok());
    const std::string ca = slurp(dir + "/public-ca.crt");
    const std::string ca_key = slurp(dir + "/state/public-ca.key");
    const std::string app = slurp(leaf_crt(dir, kApp));
    const std::string api = slurp(leaf_crt(dir, kApi));

    auto r = rotate_public_ca(dir, {kApi, kApp});
    cr_assert(r.ok(), "%s", r.ok() ? "" : r.error().message.c_str());
    cr_assert(r->action == PublicCertAction::kRotateCa);
    cr_assert_eq(r->issued.size(), 2u);
    EXPECT_STR_NEQ(slurp(dir + "/public-ca.crt"), ca);
    EXPECT_STR_NEQ(slurp(dir + "/state/public-ca.key"), ca_key);
    EXPECT_STR_NEQ(slurp(leaf_crt(dir, kApp)), app);
    EXPECT_STR_NEQ(slurp(leaf_crt(dir, kApi)), api);
    cr_assert_eq(verify_public_leaf(dir, kApp), 0u);
    cr_assert_eq(verify_public_leaf(dir, kApi), 0u);
    cr_assert_eq(mode_of(dir + "/state/public-ca.key"), 0600u);
    cr_assert_eq(mode_of(dir + "/public-ca.crt"), 0644u);
    // The old leaf does not verify against the new CA.
    spit(leaf_crt(dir, kApp), app);
    cr_assert_neq(verify_public_leaf(dir, kApp), 0u);

    // From nothing, rotate-ca makes everything.
    std::string fresh = g_dir + "/fresh";
    cr_assert(rotate_public_ca(fresh, {kApp}).ok());
    cr_assert_eq(verify_public_leaf(fresh, kApp), 0u);
    cr_assert_eq(mode_of(fresh + "/state"), 0700u);
}

Test(trust, public_cert_loader_names_the_file_and_the_cause) {
    std::string dir = g_dir + "/public-cert";
    cr_assert(init_public_cert(dir, {kApp, kApi}).ok());
    const std::string crt = leaf_crt(dir, kApp);
    const std::string key = leaf_key(dir, kApp);
    const std::string crt_text = slurp(crt);
    const std::string key_text = slurp(key);
    auto restore = [&] {
        spit(crt, crt_text, 0644);
        spit(key, key_text, 0600);
    };

    EXPECT_STR_EQ(error_of(load_public_cert(dir, "new.example.test")),
                  "missing certificate for terminating hostname new.example.test: run "
                  "`runewarp client public-cert init --hostname new.example.test`");

    cr_assert_eq(unlink(key.c_str()), 0);
    cr_assert(!public_cert_absent(dir, kApp));
    std::string m = error_of(load_public_cert(dir, kApp));
    expect_contains(m, key);
    expect_contains(m, "No such file or directory");
    restore();
    cr_assert_eq(unlink(crt.c_str()), 0);
    m = error_of(load_public_cert(dir, kApp));
    expect_contains(m, crt);
    expect_contains(m, "No such file or directory");
    restore();

    cr_assert_eq(chmod(key.c_str(), 0640), 0);
    m = error_of(load_public_cert(dir, kApp));
    expect_contains(m, "private key " + key + " has mode 0640");
    expect_contains(m, "run `chmod 600 " + key + "`");
    restore();

    spit(key, slurp(leaf_key(dir, kApi)), 0600);
    EXPECT_STR_EQ(error_of(load_public_cert(dir, kApp)), key + " is not the key of " + crt);
    restore();

    // api's files in app's place: a certificate for another hostname.
    spit(crt, slurp(leaf_crt(dir, kApi)), 0644);
    spit(key, slurp(leaf_key(dir, kApi)), 0600);
    m = error_of(load_public_cert(dir, kApp));
    expect_contains(m, crt + " is not valid for hostname " + kApp);
    restore();

    spit(crt, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", 0644);
    m = error_of(load_public_cert(dir, kApp));
    expect_contains(m, crt);
    restore();

    // Leaf then its issuer is a chain in order; the reverse is not.
    const std::string ca_text = slurp(dir + "/public-ca.crt");
    spit(crt, crt_text + ca_text, 0644);
    auto chained = load_public_cert(dir, kApp);
    cr_assert(chained.ok(), "%s", chained.ok() ? "" : chained.error().message.c_str());
    EXPECT_STR_EQ(chained->cert_pem, crt_text + ca_text);
    spit(crt, ca_text + crt_text, 0644);
    m = error_of(load_public_cert(dir, kApp));
    expect_contains(m, "cannot parse certificate " + crt);
    restore();

    // public-ca.crt is not needed: certificates from another CA load as they are.
    cr_assert_eq(unlink((dir + "/public-ca.crt").c_str()), 0);
    cr_assert_eq(unlink((dir + "/state/public-ca.key").c_str()), 0);
    std::string server_dir = g_dir + "/server-cert";
    cr_assert(init_server_cert(server_dir, kApp).ok());
    spit(crt, slurp(server_dir + "/server.crt"), 0644);
    spit(key, slurp(server_dir + "/server.key"), 0600);
    auto foreign = load_public_cert(dir, kApp);
    cr_assert(foreign.ok(), "%s", foreign.ok() ? "" : foreign.error().message.c_str());

    // Removed material reads as absent.
    cr_assert_eq(unlink(crt.c_str()), 0);
    cr_assert_eq(unlink(key.c_str()), 0);
    cr_assert(public_cert_absent(dir, kApp));
}

Test(trust, public_cert_summary_lines) {
    PublicCertSummary s;
    s.dir = "/d";
    s.not_before = 1777629600;  // 2026-05-01T10:00:00Z
    s.not_after = s.not_before + 90 * 86'400;
    const std::string times =
        "Leaf certificate lifetime: 90 days\n"
        "Issued at (UTC): 2026-05-01T10:00:00Z\n"
        "Renew after (UTC): 2026-06-30T10:00:00Z\n"
        "Expires at (UTC): 2026-07-30T10:00:00Z\n";

    s.action = PublicCertAction::kInit;
    s.issued = {"a.example.test", "b.example.test"};
    EXPECT_STR_EQ(format_public_cert_summary(s),
                  "Public hostname CA: /d/public-ca.crt\n"
                  "Initialized leaf certificate(s) for: a.example.test, b.example.test\n" +
                      times);
    s.existing = {"c.example.test"};
    s.issued = {"a.example.test"};
    EXPECT_STR_EQ(format_public_cert_summary(s),
                  "Public hostname certificate material already exists for: c.example.test\n"
                  "Public hostname CA: /d/public-ca.crt\n"
                  "Initialized leaf certificate(s) for: a.example.test\n" +
                      times);
    s.existing = {"a.example.test", "c.example.test"};
    s.issued.clear();
    EXPECT_STR_EQ(format_public_cert_summary(s),
                  "Public hostname certificate material already exists for: a.example.test, "
                  "c.example.test\n"
                  "Public hostname CA: /d/public-ca.crt\n" +
                      times);

    s.existing.clear();
    s.issued = {"a.example.test", "b.example.test"};
    s.action = PublicCertAction::kRenew;
    EXPECT_STR_EQ(format_public_cert_summary(s),
                  "Renewed leaf certificate(s) for: a.example.test, b.example.test\n" + times);
    s.action = PublicCertAction::kRotateCa;
    EXPECT_STR_EQ(format_public_cert_summary(s),
                  "Public hostname CA rotated: /d/public-ca.crt\n"
                  "Reissued leaf certificate(s) for: a.example.test, b.example.test\n" +
                      times);
}
