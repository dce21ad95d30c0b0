//! What the sidecar writes on a volume besides mounting it: the owner and mode of a volume's root, and the
//! node's identity (a private key generated here — it never leaves the agent — with its CSR, then the
//! signed certificate, the cluster CA and the `elastic` password beside it).
//!
//! Below a volume's root every path is opened relative to a directory handle and without following
//! symbolic links, and new files are created exclusively under a fresh name: the volume's contents belong
//! to the container, and the sidecar may chown, so a planted link must not redirect a write or a chown
//! to a file of the agent.

use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rand::Rng;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData,
    SanType,
};
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid};
use tether_proto::v1::{IdentityRequest, VolumeOwner};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::pem::Pem;

/// The private key, written by Prepare.
pub const KEY_FILE: &str = "node.key";
/// The node's certificate, written by InstallIdentity.
pub const CERT_FILE: &str = "node.crt";
/// The cluster CA, written by InstallIdentity.
pub const CA_FILE: &str = "ca.crt";
/// The `elastic` user's password (Elasticsearch's `ELASTIC_PASSWORD_FILE`), written by InstallIdentity.
pub const PASSWORD_FILE: &str = "elastic-password";

/// Secrets: readable by their owner only, from the moment they exist.
const SECRET_MODE: u32 = 0o600;
/// Certificates are public.
const PUBLIC_MODE: u32 = 0o644;
/// The identity directory: the owner (Elasticsearch's uid) and its group, nobody else.
const DIR_MODE: u32 = 0o750;

/// Why a step on a volume's files failed. The caller adds the volume's name.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity dir {dir:?}: {reason}")]
    BadDir { dir: String, reason: &'static str },
    #[error("owner mode {mode:#o}: only permission bits (at most 0o7777) may be set")]
    BadMode { mode: u32 },
    #[error("identity request: {0}")]
    BadRequest(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what}: {message}")]
    Crypto { what: &'static str, message: String },
    #[error("certificate's public key does not match {}", path.display())]
    KeyMismatch { path: PathBuf },
}

/// Numeric owner and permission bits from the scheduler (mode 0: leave the mode alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Owner {
    /// Checks the mode: anything beyond permission bits (a file type, a typo in decimal) is refused.
    pub fn from_proto(o: &VolumeOwner) -> Result<Owner, IdentityError> {
        if o.mode > 0o7777 {
            return Err(IdentityError::BadMode { mode: o.mode });
        }
        Ok(Owner {
            uid: o.uid,
            gid: o.gid,
            mode: o.mode,
        })
    }

    fn chown(&self, fd: impl AsFd) -> io::Result<()> {
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )?;
        Ok(())
    }
}

/// The components of an identity directory: relative, no `..`, `.` or empty parts ("" is the root).
pub fn dir_components(dir: &str) -> Result<Vec<&str>, IdentityError> {
    let bad = |reason| IdentityError::BadDir {
        dir: dir.to_string(),
        reason,
    };
    if dir.is_empty() {
        return Ok(Vec::new());
    }
    if dir.starts_with('/') {
        return Err(bad("must be relative to the volume's root"));
    }
    if dir.contains('\0') {
        return Err(bad("must not contain NUL"));
    }
    let parts: Vec<&str> = dir.split('/').collect();
    if parts.contains(&"..") {
        return Err(bad("must not contain `..`"));
    }
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return Err(bad("must not contain empty or `.` parts"));
    }
    Ok(parts)
}

/// Checks everything in an identity request that does not need the volume (before anything is mounted).
pub fn validate_request(req: &IdentityRequest) -> Result<(), IdentityError> {
    dir_components(&req.dir)?;
    csr_params(req).map(|_| ())
}

fn io_err(what: &'static str, path: &Path, source: io::Error) -> IdentityError {
    IdentityError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> IdentityError {
    move |e| IdentityError::Crypto {
        what,
        message: e.to_string(),
    }
}

/// Sets `owner` (and its mode, when not 0) on the volume's root directory itself, not below it.
pub fn apply_owner(root: &Path, owner: &Owner) -> Result<(), IdentityError> {
    let fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("opening volume root", root, e.into()))?;
    owner
        .chown(&fd)
        .map_err(|e| io_err("setting the owner of volume root", root, e))?;
    if owner.mode != 0 {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(owner.mode))
            .map_err(|e| io_err("setting the mode of volume root", root, e.into()))?;
    }
    Ok(())
}

/// The identity directory, opened below `root` without following links; created (mode 0750, owned by
/// `owner`) when `create`.
fn open_dir(
    root: &Path,
    dir: &str,
    owner: Option<&Owner>,
    create: bool,
) -> Result<(OwnedFd, PathBuf), IdentityError> {
    let parts = dir_components(dir)?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut path = root.to_path_buf();
    let mut fd = rustix::fs::open(root, flags, Mode::empty())
        .map_err(|e| io_err("opening volume root", root, e.into()))?;
    for part in parts {
        path.push(part);
        let open =
            |at: &OwnedFd| rustix::fs::openat(at, part, flags | OFlags::NOFOLLOW, Mode::empty());
        let next = match open(&fd) {
            Err(rustix::io::Errno::NOENT) if create => {
                rustix::fs::mkdirat(&fd, part, Mode::from_raw_mode(DIR_MODE))
                    .map_err(|e| io_err("creating", &path, e.into()))?;
                open(&fd)
            }
            other => other,
        };
        fd = next.map_err(|e| match e {
            // O_NOFOLLOW on a link: ELOOP; a link or file where a directory should be: ENOTDIR.
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => IdentityError::Io {
                what: "opening",
                path: path.clone(),
                source: io::Error::other("not a directory (symbolic links are refused)"),
            },
            e => io_err("opening", &path, e.into()),
        })?;
        if create {
            if let Some(o) = owner {
                o.chown(&fd)
                    .map_err(|e| io_err("setting the owner of", &path, e))?;
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))
                .map_err(|e| io_err("setting the mode of", &path, e.into()))?;
        }
    }
    Ok((fd, path))
}

/// Replaces `name` in `dir` with `body`: a new file (created exclusively under a random name, with its
/// final mode and owner before any byte is written), fsynced, renamed over `name`, directory fsynced.
fn write_file(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &str,
    body: &[u8],
    mode: u32,
    owner: Option<&Owner>,
) -> Result<(), IdentityError> {
    let path = dir_path.join(name);
    let tmp = format!(".{name}.tmp-{:016x}", rand::rng().random::<u64>());
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| io_err("creating a temporary file for", &path, e.into()))?;
    let written = (|| -> io::Result<()> {
        // The umask may have narrowed the mode; it can only have narrowed it.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        if let Some(o) = owner {
            o.chown(&fd)?;
        }
        let mut file = std::fs::File::from(fd);
        file.write_all(body)?;
        file.sync_all()?;
        rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
        rustix::fs::fsync(dir)?;
        Ok(())
    })();
    written.map_err(|e| {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        io_err("writing", &path, e)
    })
}

/// Removes `name` from `dir` if it is there.
fn remove_file(dir: &OwnedFd, dir_path: &Path, name: &str) -> Result<(), IdentityError> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err("removing", &dir_path.join(name), e.into())),
    }
}

/// The CSR's contents: the common name and SANs the scheduler asked for, nothing else.
fn csr_params(req: &IdentityRequest) -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if !req.common_name.is_empty() {
        dn.push(DnType::CommonName, req.common_name.as_str());
    }
    params.distinguished_name = dn;
    for name in &req.dns_names {
        let ia5 = name
            .as_str()
            .try_into()
            .map_err(|_| IdentityError::BadRequest(format!("DNS name {name:?} is not ASCII")))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    for ip in &req.ip_addresses {
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| IdentityError::BadRequest(format!("{ip:?} is not an IP address")))?;
        params.subject_alt_names.push(SanType::IpAddress(addr));
    }
    Ok(params)
}

/// Generates a fresh ECDSA P-256 key as `<root>/<dir>/node.key` (0600, owned by `owner`; the directory is
/// created 0750) and returns a PEM CSR for it. An earlier launch's `node.crt` is removed: it certifies
/// the old key, and the node must not start with a pair that does not match.
pub fn generate(
    root: &Path,
    req: &IdentityRequest,
    owner: Option<&Owner>,
) -> Result<String, IdentityError> {
    let params = csr_params(req)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto("generating a key"))?;
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(crypto("making the CSR"))?;
    let (dir, dir_path) = open_dir(root, &req.dir, owner, true)?;
    remove_file(&dir, &dir_path, CERT_FILE)?;
    write_file(
        &dir,
        &dir_path,
        KEY_FILE,
        key.serialize_pem().as_bytes(),
        SECRET_MODE,
        owner,
    )?;
    Ok(csr)
}

/// What InstallIdentity writes.
#[derive(Debug, Clone)]
pub struct Install<'a> {
    pub dir: &'a str,
    pub certificate_pem: &'a str,
    pub ca_pem: &'a str,
    pub password: &'a str,
    pub owner: Option<Owner>,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| match e {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
            x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
        })
}

/// The DER of every CERTIFICATE block in `pem` (at least one).
fn certificates(what: &'static str, pem: &str) -> Result<Vec<Vec<u8>>, IdentityError> {
    let bad = |message: String| IdentityError::Crypto { what, message };
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| bad(format!("not PEM: {e}")))?;
        if block.label == "CERTIFICATE" {
            block
                .parse_x509()
                .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(out)
}

/// Checks the certificate against `node.key` and the CA, then writes `node.crt`, `ca.crt` (0644) and the
/// password file (0600; removed when the password is empty), all owned by `owner`.
pub fn install(root: &Path, req: &Install<'_>) -> Result<(), IdentityError> {
    let certs = certificates("certificate", req.certificate_pem)?;
    let cas = certificates("CA", req.ca_pem)?;
    let (dir, dir_path) = open_dir(root, req.dir, None, false)?;
    let key_path = dir_path.join(KEY_FILE);
    let key_fd = rustix::fs::openat(
        &dir,
        KEY_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io_err(
            "opening the key (was the Prepare asked for an identity?)",
            &key_path,
            e.into(),
        )
    })?;
    let key_pem = io::read_to_string(std::fs::File::from(key_fd))
        .map_err(|e| io_err("reading the key", &key_path, e))?;
    let key = KeyPair::from_pem(&key_pem).map_err(crypto("reading node.key"))?;
    let leaf = parse(&certs[0]).map_err(|e| IdentityError::Crypto {
        what: "certificate",
        message: e.to_string(),
    })?;
    if leaf.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(IdentityError::KeyMismatch { path: key_path });
    }
    let signed_by_ca = cas
        .iter()
        .any(|der| parse(der).is_ok_and(|ca| leaf.verify_signature(Some(ca.public_key())).is_ok()));
    if !signed_by_ca {
        return Err(IdentityError::Crypto {
            what: "certificate",
            message: "not signed by the CA it came with".into(),
        });
    }
    let owner = req.owner.as_ref();
    write_file(
        &dir,
        &dir_path,
        CERT_FILE,
        req.certificate_pem.as_bytes(),
        PUBLIC_MODE,
        owner,
    )?;
    write_file(
        &dir,
        &dir_path,
        CA_FILE,
        req.ca_pem.as_bytes(),
        PUBLIC_MODE,
        owner,
    )?;
    if req.password.is_empty() {
        remove_file(&dir, &dir_path, PASSWORD_FILE)?;
    } else {
        write_file(
            &dir,
            &dir_path,
            PASSWORD_FILE,
            req.password.as_bytes(),
            SECRET_MODE,
            owner,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    use rcgen::{BasicConstraints, CertificateSigningRequestParams, IsCa, Issuer};

    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    /// Root may give files away; anyone else can only "give" them to itself.
    fn owner() -> Owner {
        let me = rustix::process::getuid().as_raw();
        let (uid, gid) = if me == 0 {
            (1000, 0)
        } else {
            (me, rustix::process::getgid().as_raw())
        };
        Owner {
            uid,
            gid,
            mode: 0o770,
        }
    }

    fn mode(path: &Path) -> io::Result<u32> {
        Ok(fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
    }

    fn request(dir: &str) -> IdentityRequest {
        IdentityRequest {
            volume: "v-config".into(),
            dir: dir.into(),
            common_name: "node-3".into(),
            dns_names: vec!["agent-3.example".into(), "node-3".into()],
            ip_addresses: vec!["10.0.0.3".into()],
        }
    }

    /// A CA and a certificate it signs for the CSR.
    fn sign(csr_pem: &str) -> Result<(String, String), rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        Ok((csr.signed_by(&issuer)?.pem(), ca.pem()))
    }

    #[test]
    fn identity_dirs_are_relative_without_dot_dot() {
        assert!(dir_components("").is_ok_and(|p| p.is_empty()));
        assert_eq!(dir_components("node/tls").ok(), Some(vec!["node", "tls"]));
        for bad in ["../x", "/abs", "a/../b", "a//b", "a/", "./a", "a/.", ".."] {
            let e = dir_components(bad).expect_err(bad).to_string();
            assert!(e.starts_with(&format!("identity dir {bad:?}")), "{e}");
        }
    }

    #[test]
    fn bad_requests_and_modes_are_refused() {
        let mut r = request("node");
        r.ip_addresses = vec!["agent-3".into()];
        let e = validate_request(&r).expect_err("not an IP").to_string();
        assert!(e.contains("\"agent-3\" is not an IP address"), "{e}");
        let e = Owner::from_proto(&VolumeOwner {
            uid: 1000,
            gid: 0,
            mode: 0o100_644,
        })
        .expect_err("a file type is not a permission")
        .to_string();
        assert!(e.contains("0o100644"), "{e}");
    }

    #[test]
    fn owner_and_mode_land_on_the_root_only() -> R {
        let root = tempfile::tempdir()?;
        fs::create_dir(root.path().join("inside"))?;
        let o = owner();
        apply_owner(root.path(), &o)?;
        let meta = fs::metadata(root.path())?;
        assert_eq!((meta.uid(), meta.gid()), (o.uid, o.gid));
        assert_eq!(mode(root.path())?, 0o770);
        let inside = fs::metadata(root.path().join("inside"))?;
        assert_eq!(inside.uid(), rustix::process::getuid().as_raw());
        // Mode 0 leaves the mode alone.
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o711))?;
        apply_owner(root.path(), &Owner { mode: 0, ..o })?;
        assert_eq!(mode(root.path())?, 0o711);
        Ok(())
    }

    #[test]
    fn generate_writes_a_private_key_and_a_matching_csr() -> R {
        let root = tempfile::tempdir()?;
        let o = owner();
        let csr_pem = generate(root.path(), &request("node/tls"), Some(&o))?;
        let dir = root.path().join("node/tls");
        let key_path = dir.join(KEY_FILE);
        assert_eq!(mode(&dir)?, 0o750);
        assert_eq!(mode(&root.path().join("node"))?, 0o750);
        assert_eq!(mode(&key_path)?, 0o600);
        let meta = fs::metadata(&key_path)?;
        assert_eq!((meta.uid(), meta.gid()), (o.uid, o.gid));
        // Nothing but the key: no temporary file left behind.
        assert_eq!(fs::read_dir(&dir)?.count(), 1);
        let key = KeyPair::from_pem(&fs::read_to_string(&key_path)?)?;
        let csr = CertificateSigningRequestParams::from_pem(&csr_pem)?;
        assert_eq!(csr.public_key.der_bytes(), key.public_key_raw());
        assert_eq!(
            csr.params.subject_alt_names,
            vec![
                SanType::DnsName("agent-3.example".try_into()?),
                SanType::DnsName("node-3".try_into()?),
                SanType::IpAddress("10.0.0.3".parse()?),
            ]
        );
        // A fresh key every time.
        generate(root.path(), &request("node/tls"), Some(&o))?;
        assert_ne!(fs::read_to_string(&key_path)?, key.serialize_pem());
        Ok(())
    }

    #[test]
    fn links_below_the_root_are_refused() -> R {
        let root = tempfile::tempdir()?;
        let elsewhere = tempfile::tempdir()?;
        symlink(elsewhere.path(), root.path().join("node"))?;
        let e = generate(root.path(), &request("node"), None)
            .expect_err("a link to a directory")
            .to_string();
        assert!(e.contains("symbolic links are refused"), "{e}");
        assert_eq!(fs::read_dir(elsewhere.path())?.count(), 0);
        Ok(())
    }

    #[test]
    fn install_checks_the_certificate_and_writes_files_with_their_modes() -> R {
        let root = tempfile::tempdir()?;
        let o = owner();
        let csr = generate(root.path(), &request("node"), Some(&o))?;
        let (cert, ca) = sign(&csr)?;
        let dir = root.path().join("node");
        let install_req = Install {
            dir: "node",
            certificate_pem: &cert,
            ca_pem: &ca,
            password: "s3cret",
            owner: Some(o),
        };

        // A certificate for another key, and one signed by another CA, are refused before any write.
        let (other_cert, _) = sign(&generate(tempfile::tempdir()?.path(), &request(""), None)?)?;
        let e = install(
            root.path(),
            &Install {
                certificate_pem: &other_cert,
                ..install_req.clone()
            },
        )
        .expect_err("another key")
        .to_string();
        assert!(e.contains("does not match"), "{e}");
        let (_, other_ca) = sign(&csr)?;
        let e = install(
            root.path(),
            &Install {
                ca_pem: &other_ca,
                ..install_req.clone()
            },
        )
        .expect_err("another CA")
        .to_string();
        assert!(e.contains("not signed by the CA"), "{e}");
        let e = install(
            root.path(),
            &Install {
                certificate_pem: "garbage",
                ..install_req.clone()
            },
        )
        .expect_err("not PEM")
        .to_string();
        assert!(e.contains("no CERTIFICATE block"), "{e}");
        assert!(!dir.join(CERT_FILE).exists());

        install(root.path(), &install_req)?;
        for (file, want) in [
            (KEY_FILE, 0o600),
            (CERT_FILE, 0o644),
            (CA_FILE, 0o644),
            (PASSWORD_FILE, 0o600),
        ] {
            let path = dir.join(file);
            assert_eq!(mode(&path)?, want, "{file}");
            let meta = fs::metadata(&path)?;
            assert_eq!((meta.uid(), meta.gid()), (o.uid, o.gid), "{file}");
        }
        assert_eq!(fs::read_to_string(dir.join(PASSWORD_FILE))?, "s3cret");
        assert_eq!(fs::read_to_string(dir.join(CERT_FILE))?, cert);

        // No password: an old password file goes.
        install(
            root.path(),
            &Install {
                password: "",
                ..install_req.clone()
            },
        )?;
        assert!(!dir.join(PASSWORD_FILE).exists());

        // The next launch's key: the old certificate goes with the old key.
        generate(root.path(), &request("node"), Some(&o))?;
        assert!(!dir.join(CERT_FILE).exists() && dir.join(CA_FILE).exists());
        Ok(())
    }

    #[test]
    fn install_without_a_key_says_so() -> R {
        let root = tempfile::tempdir()?;
        fs::create_dir(root.path().join("node"))?;
        let csr = generate(tempfile::tempdir()?.path(), &request(""), None)?;
        let (cert, ca) = sign(&csr)?;
        let e = install(
            root.path(),
            &Install {
                dir: "node",
                certificate_pem: &cert,
                ca_pem: &ca,
                password: "",
                owner: None,
            },
        )
        .expect_err("no key")
        .to_string();
        assert!(e.contains("node.key"), "{e}");
        Ok(())
    }
}
