//! Dataset downloads against a local HTTP server on 127.0.0.1 that each test starts itself
//! (never the internet, see `server/`): success, checksum mismatch, an interrupted transfer
//! resumed with a Range request, servers without Range support, files already present,
//! archives unpacked and DVS128 Gesture's manual-download error. The `snn data` commands
//! are tested in the root crate (`tests/cli.rs`).

// Fixture helpers are not `#[test]` functions, so clippy.toml's test allowance does not
// reach them; a failed fixture write should just fail the test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};
use snn_data::download::{
    Dataset, DownloadError, DownloadOptions, Outcome, RemoteFile, Unpack, download_dataset,
    download_file, install_file, verify_file,
};
use snn_data::{Cifar10, NMnist, Split};
use tempfile::TempDir;

mod server;

use server::{Mode, Seen, Server, fixture};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn md5(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn opts() -> DownloadOptions {
    DownloadOptions {
        mirror: None,
        progress: false,
        timeout: Duration::from_secs(10),
        replace_damaged: false,
    }
}

fn part_of(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

const LEN: usize = 300_000;

/// Asserts that `outcome` is a whole download that reused `resumed_from` bytes of a
/// partial file, and that `path` holds `bytes`.
fn assert_downloaded(outcome: Outcome, resumed_from: usize, path: &Path, bytes: &[u8]) {
    assert_eq!(
        outcome,
        Outcome::Downloaded {
            resumed_from: resumed_from as u64,
            bytes: bytes.len() as u64
        }
    );
    assert_eq!(fs::read(path).unwrap(), bytes);
}

/// `LEN` fixture bytes served as `f.bin` in `mode`, an empty folder to fetch them into,
/// and the file checked by its SHA-256.
fn serve(seed: u64, mode: Mode) -> (Vec<u8>, Server, TempDir, RemoteFile) {
    let bytes = fixture(LEN, seed);
    let server = Server::start(&[("f.bin", &bytes)], mode);
    let file = RemoteFile::new("f.bin", server.url("f.bin"), sha256(&bytes));
    (bytes, server, TempDir::new().unwrap(), file)
}

// ---------------------------------------------------------------------------------------
// Single files.

#[test]
fn a_file_arrives_verified_under_its_final_name() {
    let bytes = fixture(LEN, 1);
    let server = Server::start(&[("train-images-idx3-ubyte.gz", &bytes)], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let mut file = RemoteFile::new(
        "train-images-idx3-ubyte.gz",
        server.url("train-images-idx3-ubyte.gz"),
        sha256(&bytes),
    );
    file.md5 = Some(md5(&bytes));
    file.size = Some(LEN as u64);

    let dest = dir.path().join("nested/mnist");
    let outcome = download_file(&file, &dest, &opts()).unwrap();

    let path = dest.join("train-images-idx3-ubyte.gz");
    assert_downloaded(outcome, 0, &path, &bytes);
    assert!(!part_of(&path).exists(), "the .part file was left behind");
    verify_file(&path, &file).unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].range, None);
}

#[test]
fn a_file_checked_by_md5_alone_arrives() {
    let bytes = fixture(LEN, 2);
    let server = Server::start(&[("Train.zip", &bytes)], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let file = RemoteFile {
        name: "Train.zip".into(),
        url: "https://example.invalid/not-used".into(),
        size: None,
        sha256: None,
        md5: Some(md5(&bytes).to_uppercase()),
        unpack: Unpack::Keep,
    };
    // The mirror replaces the canonical URL: <mirror>/<name>.
    let opts = DownloadOptions {
        mirror: Some(format!("{}/", server.base())),
        ..opts()
    };
    download_file(&file, dir.path(), &opts).unwrap();
    assert_eq!(fs::read(dir.path().join("Train.zip")).unwrap(), bytes);
    assert_eq!(server.seen()[0].path, "/Train.zip");
}

#[test]
fn a_checksum_mismatch_is_an_error_and_leaves_no_file() {
    let bytes = fixture(LEN, 3);
    let server = Server::start(&[("cifar-10-binary.tar.gz", &bytes)], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let expected = sha256(b"the published file");
    let file = RemoteFile::new(
        "cifar-10-binary.tar.gz",
        server.url("cifar-10-binary.tar.gz"),
        expected.clone(),
    );

    let err = download_file(&file, dir.path(), &opts()).unwrap_err();

    let path = dir.path().join("cifar-10-binary.tar.gz");
    let msg = err.to_string();
    match &err {
        DownloadError::DigestMismatch {
            path: p,
            algorithm,
            expected: e,
            actual,
            ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(*algorithm, "SHA-256");
            assert_eq!(e, &expected);
            assert_eq!(actual, &sha256(&bytes));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    for needle in [
        path.display().to_string(),
        expected,
        sha256(&bytes),
        "SHA-256".into(),
        "deleted".into(),
    ] {
        assert!(msg.contains(&needle), "message lacks {needle:?}: {msg}");
    }
    assert!(
        !path.exists(),
        "a file that failed its check is under the final name"
    );
    assert!(!part_of(&path).exists(), "the failed .part file was kept");
}

#[test]
fn an_md5_mismatch_names_md5() {
    let bytes = fixture(1000, 4);
    let server = Server::start(&[("Test.zip", &bytes)], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let file = RemoteFile {
        md5: Some("69ca8762b2fe404d9b9bad1103e97832".into()),
        sha256: None,
        ..RemoteFile::new("Test.zip", server.url("Test.zip"), "")
    };
    let err = download_file(&file, dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("MD5") && msg.contains("69ca8762b2fe404d9b9bad1103e97832"),
        "{msg}"
    );
    assert!(msg.contains(&md5(&bytes)), "{msg}");
    assert!(!dir.path().join("Test.zip").exists());
    assert!(!dir.path().join("Test.zip.part").exists());
}

#[test]
fn a_server_offering_the_wrong_size_is_refused_before_downloading() {
    let (_, _server, dir, file) = serve(5, Mode::Normal);
    let file = RemoteFile {
        size: Some(LEN as u64 + 1),
        ..file
    };
    let err = download_file(&file, dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, DownloadError::SizeMismatch { expected, actual, .. }
            if expected == LEN as u64 + 1 && actual == LEN as u64),
        "{msg}"
    );
    assert!(msg.contains("f.bin"), "{msg}");
    assert!(!dir.path().join("f.bin").exists());
    assert!(!dir.path().join("f.bin.part").exists());
}

#[test]
fn an_interrupted_transfer_is_resumed_with_a_range_request() {
    let bytes = fixture(LEN, 6);
    let server = Server::start(
        &[("t10k-images-idx3-ubyte.gz", &bytes)],
        Mode::DropFirstHalfway,
    );
    let dir = TempDir::new().unwrap();
    let file = RemoteFile {
        size: Some(LEN as u64),
        ..RemoteFile::new(
            "t10k-images-idx3-ubyte.gz",
            server.url("t10k-images-idx3-ubyte.gz"),
            sha256(&bytes),
        )
    };
    let path = dir.path().join("t10k-images-idx3-ubyte.gz");
    let part = part_of(&path);

    // First attempt: the server drops the connection half-way.
    let err = download_file(&file, dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    let DownloadError::Interrupted {
        received,
        total,
        partial,
        ..
    } = &err
    else {
        panic!("expected an interrupted transfer, got {err:?}");
    };
    assert_eq!(*received, (LEN / 2) as u64, "{msg}");
    assert_eq!(*total, Some(LEN as u64), "{msg}");
    assert_eq!(partial, &part);
    for needle in ["interrupted", "resume", &part.display().to_string()] {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    assert!(!path.exists(), "a partial file is under the final name");
    assert_eq!(fs::read(&part).unwrap(), bytes[..LEN / 2]);

    // Second attempt: asks for the rest only, and completes.
    let outcome = download_file(&file, dir.path(), &opts()).unwrap();
    assert_downloaded(outcome, LEN / 2, &path, &bytes);
    assert!(!part.exists());
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={}-", LEN / 2).as_str())
    );
}

#[test]
fn a_redirected_download_is_resumed_at_its_target() {
    // Like Mendeley's links to N-MNIST, which redirect to the file's storage.
    let bytes = fixture(LEN, 13);
    let server = Server::start(&[("Test.zip", &bytes)], Mode::DropFirstHalfway);
    let dir = TempDir::new().unwrap();
    let file = RemoteFile {
        md5: Some(md5(&bytes)),
        sha256: None,
        ..RemoteFile::new("Test.zip", server.url("moved/Test.zip"), "")
    };
    let err = download_file(&file, dir.path(), &opts()).unwrap_err();
    assert!(matches!(err, DownloadError::Interrupted { .. }), "{err}");
    let outcome = download_file(&file, dir.path(), &opts()).unwrap();
    assert_downloaded(outcome, LEN / 2, &dir.path().join("Test.zip"), &bytes);
    let seen = server.seen();
    let range = Some(format!("bytes={}-", LEN / 2));
    let expected = [
        ("/moved/Test.zip", None),
        ("/Test.zip", None),
        ("/moved/Test.zip", range.clone()),
        ("/Test.zip", range),
    ];
    assert_eq!(
        seen,
        expected.map(|(path, range)| Seen {
            path: path.into(),
            range
        }),
    );
}

#[test]
fn a_server_without_range_support_gets_a_clean_restart() {
    let (bytes, server, dir, file) = serve(7, Mode::IgnoreRange);
    fs::write(dir.path().join("f.bin.part"), &bytes[..1000]).unwrap();

    let outcome = download_file(&file, dir.path(), &opts()).unwrap();

    assert_downloaded(outcome, 0, &dir.path().join("f.bin"), &bytes);
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].range.as_deref(), Some("bytes=1000-"));
}

#[test]
fn a_stale_partial_file_is_discarded_and_fetched_afresh() {
    let (bytes, server, dir, file) = serve(8, Mode::Normal);
    // A partial file from some other version of the file.
    fs::write(dir.path().join("f.bin.part"), fixture(1000, 99)).unwrap();

    let outcome = download_file(&file, dir.path(), &opts()).unwrap();

    assert_downloaded(outcome, 0, &dir.path().join("f.bin"), &bytes);
    let ranges: Vec<_> = server.seen().into_iter().map(|s| s.range).collect();
    assert_eq!(ranges, [Some("bytes=1000-".to_string()), None]);
}

#[test]
fn a_complete_partial_file_is_verified_without_another_transfer() {
    let (bytes, server, dir, file) = serve(9, Mode::Normal);
    fs::write(dir.path().join("f.bin.part"), &bytes).unwrap();

    let outcome = download_file(&file, dir.path(), &opts()).unwrap();

    assert_downloaded(outcome, LEN, &dir.path().join("f.bin"), &bytes);
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].range, Some(format!("bytes={LEN}-")));
}

#[test]
fn a_file_already_present_is_not_downloaded_again() {
    let (_, server, dir, file) = serve(10, Mode::Normal);

    download_file(&file, dir.path(), &opts()).unwrap();
    let again = download_file(&file, dir.path(), &opts()).unwrap();

    assert_eq!(again, Outcome::AlreadyPresent);
    assert_eq!(server.seen().len(), 1, "the second call went to the server");
}

#[test]
fn a_damaged_file_already_present_is_reported_and_kept() {
    let (_, server, dir, file) = serve(11, Mode::Normal);
    let path = dir.path().join("f.bin");
    fs::write(&path, b"something else").unwrap();

    let err = download_file(&file, dir.path(), &opts()).unwrap_err();

    let msg = err.to_string();
    assert!(matches!(err, DownloadError::DigestMismatch { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("--replace-damaged"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), b"something else");
    assert!(server.seen().is_empty());

    // Asked to, it downloads the file afresh.
    let options = DownloadOptions {
        replace_damaged: true,
        ..opts()
    };
    let outcome = download_file(&file, dir.path(), &options).unwrap();
    assert!(matches!(outcome, Outcome::Downloaded { .. }), "{outcome:?}");
    assert_ne!(fs::read(&path).unwrap(), b"something else");
}

#[test]
fn a_missing_file_on_the_server_is_an_http_error_naming_the_url() {
    let server = Server::start(&[], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let file = RemoteFile::new("gone.bin", server.url("gone.bin"), sha256(b""));
    let err = download_file(&file, dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, DownloadError::Http { status: 404, .. }),
        "{msg}"
    );
    assert!(msg.contains(&server.url("gone.bin")), "{msg}");
    assert!(msg.contains("SNN_DATA_MIRROR"), "{msg}");
    assert!(!dir.path().join("gone.bin").exists());
}

// ---------------------------------------------------------------------------------------
// Archives.

fn cifar_fixture() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (i, name) in Cifar10::batch_names(Split::Train)
        .iter()
        .chain(Cifar10::batch_names(Split::Test))
        .enumerate()
    {
        // Two records each: a label byte, then 3,072 pixel bytes.
        let mut batch = Vec::new();
        for r in 0..2u8 {
            batch.push((i as u8 + r) % 10);
            batch.extend(std::iter::repeat_n(
                i as u8 * 10 + r,
                Cifar10::RECORD_BYTES - 1,
            ));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(batch.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            &batch[..],
        )
        .unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_tar_gz_archive_is_unpacked_into_the_readers_layout() {
    let archive = cifar_fixture();
    let server = Server::start(&[("cifar-10-binary.tar.gz", &archive)], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let file = RemoteFile {
        md5: Some(md5(&archive)),
        unpack: Unpack::TarGz {
            creates: "cifar-10-batches-bin".into(),
        },
        ..RemoteFile::new(
            "cifar-10-binary.tar.gz",
            server.url("cifar-10-binary.tar.gz"),
            sha256(&archive),
        )
    };

    let outcome = install_file(&file, dir.path(), &opts()).unwrap();
    assert!(matches!(outcome, Outcome::Downloaded { .. }), "{outcome:?}");

    let test = Cifar10::load(dir.path(), Split::Test).unwrap();
    assert_eq!(test.len(), 2);
    assert_eq!(test.labels(), [5, 6]);
    let train = Cifar10::load(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 10);
    // No scratch folder is left, and a second run neither fetches nor unpacks.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "leftovers: {names:?}"
    );
    let again = install_file(&file, dir.path(), &opts()).unwrap();
    assert_eq!(again, Outcome::AlreadyUnpacked);
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn a_zip_archive_is_unpacked_into_the_readers_layout() {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for digit in 0..10u8 {
        zip.start_file(format!("Train/{digit}/0000{digit}.bin"), options)
            .unwrap();
        // One event: x, y, polarity and timestamp 0x00_01_02 + digit.
        zip.write_all(&[digit, digit + 1, 0x80, 0x01, 0x02 + digit])
            .unwrap();
    }
    let archive = zip.finish().unwrap().into_inner();
    let server = Server::start(&[("Train.zip", &archive)], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let file = RemoteFile {
        name: "Train.zip".into(),
        url: server.url("Train.zip"),
        size: Some(archive.len() as u64),
        sha256: None,
        md5: Some(md5(&archive)),
        unpack: Unpack::Zip {
            creates: "Train".into(),
        },
    };

    install_file(&file, dir.path(), &opts()).unwrap();

    let train = NMnist::open(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(
        fs::read(dir.path().join("Train/7/00007.bin")).unwrap(),
        [7, 8, 0x80, 0x01, 0x09]
    );
}

#[test]
fn an_archive_without_the_expected_folder_is_a_clear_error() {
    let archive = cifar_fixture();
    let server = Server::start(&[("a.tar.gz", &archive)], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let file = RemoteFile {
        unpack: Unpack::TarGz {
            creates: "somewhere-else".into(),
        },
        ..RemoteFile::new("a.tar.gz", server.url("a.tar.gz"), sha256(&archive))
    };
    let err = install_file(&file, dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Unpack { .. }), "{msg}");
    assert!(msg.contains("somewhere-else"), "{msg}");
    assert!(msg.contains("a.tar.gz"), "{msg}");
    assert!(!dir.path().join("somewhere-else").exists());
    assert!(!dir.path().join(".somewhere-else.unpacking").exists());
}

// ---------------------------------------------------------------------------------------
// The registry.

#[test]
fn every_downloadable_file_has_a_digest_and_a_distinct_name() {
    let mut names = Vec::new();
    for dataset in Dataset::ALL {
        assert_eq!(dataset.name().parse::<Dataset>(), Ok(dataset));
        assert_eq!(dataset.to_string(), dataset.name());
        for file in dataset.files() {
            assert!(file.sha256.is_some() || file.md5.is_some(), "{}", file.name);
            for digest in file.sha256.iter().chain(&file.md5) {
                assert!(
                    digest
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_uppercase()),
                    "{digest}"
                );
            }
            assert_eq!(file.sha256.as_ref().map_or(64, String::len), 64);
            assert_eq!(file.md5.as_ref().map_or(32, String::len), 32);
            names.push(file.name);
        }
    }
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "two files share a name on a mirror");
    assert_eq!("CIFAR-10".parse::<Dataset>(), Ok(Dataset::Cifar10));
    assert_eq!("dvs128-gesture".parse::<Dataset>(), Ok(Dataset::DvsGesture));
    assert!("imagenet".parse::<Dataset>().is_err());
    // The published digests the issue names.
    let cifar = &Dataset::Cifar10.files()[0];
    assert_eq!(
        cifar.md5.as_deref(),
        Some("c32a1d4ab5d03f1284b67883e8d87530")
    );
}

#[test]
fn dvs_gesture_says_where_to_get_it_and_where_to_put_it() {
    let dir = TempDir::new().unwrap();
    let err = download_dataset(Dataset::DvsGesture, dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::ManualDownload { .. }), "{msg}");
    let folder = dir.path().join("dvs-gesture");
    for needle in [
        "DVS128 Gesture cannot be downloaded automatically".to_string(),
        "IBM's DVS128 Gesture dataset".into(),
        "https://research.ibm.com/interactive/dvsgesture/".into(),
        "`DvsGesture.tar.gz`".into(),
        folder.join("DvsGesture.tar.gz").display().to_string(),
        folder
            .join("DvsGesture")
            .join("trials_to_train.txt")
            .display()
            .to_string(),
        "user01_fluorescent_labels.csv".into(),
    ] {
        assert!(msg.contains(&needle), "message lacks {needle:?}:\n{msg}");
    }
    assert!(folder.is_dir(), "the folder to drop the archive in exists");
}

#[test]
fn a_dvs_gesture_archive_put_in_place_is_checked_before_unpacking() {
    let dir = TempDir::new().unwrap();
    let folder = dir.path().join("dvs-gesture");
    fs::create_dir_all(&folder).unwrap();
    let archive = folder.join("DvsGesture.tar.gz");
    fs::write(&archive, b"not IBM's archive").unwrap();
    let err = download_dataset(Dataset::DvsGesture, dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DownloadError::DigestMismatch {
                algorithm: "MD5",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains(&archive.display().to_string()), "{msg}");
    assert!(msg.contains("8a5c71fb11e24e5ca5b11866ca6c00a1"), "{msg}");
    assert!(archive.is_file(), "the user's file was deleted");
    assert!(!folder.join("DvsGesture").exists());
}

#[test]
fn a_local_folder_serves_as_a_mirror_and_its_files_are_verified() {
    let bytes = fixture(4096, 11);
    let mirror = TempDir::new().unwrap();
    std::fs::write(mirror.path().join("f.bin"), &bytes).unwrap();
    let file = RemoteFile::new("f.bin", "https://unreachable.invalid/f.bin", sha256(&bytes));
    for given in [
        mirror.path().display().to_string(),
        format!("file://{}", mirror.path().display()),
    ] {
        let dir = TempDir::new().unwrap();
        let options = DownloadOptions {
            mirror: Some(given),
            ..opts()
        };
        let outcome = download_file(&file, dir.path(), &options).unwrap();
        assert_downloaded(outcome, 0, &dir.path().join("f.bin"), &bytes);
    }

    // A damaged copy is refused and not kept.
    std::fs::write(mirror.path().join("f.bin"), b"damaged").unwrap();
    let dir = TempDir::new().unwrap();
    let options = DownloadOptions {
        mirror: Some(mirror.path().display().to_string()),
        ..opts()
    };
    let msg = download_file(&file, dir.path(), &options)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("local mirror") && msg.contains("SHA-256"),
        "{msg}"
    );
    assert!(!dir.path().join("f.bin").exists() && !dir.path().join("f.bin.part").exists());

    // Neither a URL nor a folder.
    let options = DownloadOptions {
        mirror: Some("notaurl".into()),
        ..opts()
    };
    let msg = download_file(&file, dir.path(), &options)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`notaurl` is neither an http(s) URL nor an existing folder"),
        "{msg}"
    );
}
