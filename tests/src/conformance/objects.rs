//! The object store port: atomic puts, checksummed reads, listing by prefix.

use synthfleet_core::ports::{ObjectStore, StoreError};

/// Runs the suite. `tamper(key, bytes)` overwrites an object's bytes behind the store's
/// back (as a disk fault or another writer would), keeping its recorded checksum.
pub async fn conforms(store: &dyn ObjectStore, tamper: impl AsyncFn(&str, Vec<u8>)) {
    store
        .put("a/b/c.json.zst", b"hello".to_vec())
        .await
        .expect("put");
    store.put("a/d", b"x".to_vec()).await.expect("put");
    store.put("z", b"outside".to_vec()).await.expect("put");
    assert_eq!(store.get("a/b/c.json.zst").await.expect("get"), b"hello");
    store
        .put("a/d", b"replaced".to_vec())
        .await
        .expect("overwrite");
    assert_eq!(store.get("a/d").await.expect("get"), b"replaced");

    let mut listed: Vec<(String, u64)> = store
        .list("a/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("a/b/c.json.zst".to_owned(), 5), ("a/d".to_owned(), 8)],
        "a prefix lists exactly its objects, with their sizes"
    );

    assert!(matches!(
        store.get("nope").await,
        Err(StoreError::NotFound { .. })
    ));

    tamper("a/b/c.json.zst", b"hellO".to_vec()).await;
    assert!(
        matches!(
            store.get("a/b/c.json.zst").await,
            Err(StoreError::Corrupt { .. })
        ),
        "every read verifies the object's checksum"
    );

    // Large objects (multipart on S3) arrive whole.
    let big: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    store.put("big", big.clone()).await.expect("large put");
    assert!(store.get("big").await.expect("get") == big, "large object");

    store.delete("a/b/c.json.zst").await.expect("delete");
    store
        .delete("a/b/c.json.zst")
        .await
        .expect("deleting twice is fine");
    let left: Vec<String> = store
        .list("a/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, ["a/d"]);
}
