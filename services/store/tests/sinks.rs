//! The sink store's rules, the same on every backend: ids are unique per tenant, a replace or
//! delete of a missing destination changes nothing, delivery records belong to one incarnation.

mod scylla_env;

use tally_store::{EmbeddedStore, SinkStore};

fn conforms(store: &dyn SinkStore) {
    assert!(store.create_destination("acme", "hook", b"v1").unwrap());
    assert!(!store.create_destination("acme", "hook", b"other").unwrap(), "an id is created once");
    assert_eq!(store.destination("acme", "hook").unwrap().as_deref(), Some(&b"v1"[..]));
    assert!(store.create_destination("globex", "hook", b"g1").unwrap(), "ids are per tenant");
    assert_eq!(store.destination("globex", "nothing").unwrap(), None);

    assert!(store.replace_destination("acme", "hook", b"v1", b"v2").unwrap());
    assert!(!store.replace_destination("acme", "hook", b"v1", b"lost").unwrap(), "v1 is no longer there");
    assert!(!store.replace_destination("acme", "absent", b"", b"x").unwrap(), "a replace creates nothing");
    assert_eq!(store.destination("acme", "absent").unwrap(), None);
    let mut all = store.destinations().unwrap();
    all.sort();
    assert_eq!(all, vec![b"g1".to_vec(), b"v2".to_vec()]);

    store.put_delivery("uid-1", 2, b"p2").unwrap();
    store.put_delivery("uid-1", 0, b"p0").unwrap();
    store.put_delivery("uid-1", 0, b"p0'").unwrap();
    store.put_delivery("uid-10", 0, b"other").unwrap();
    let expected = vec![(0, b"p0'".to_vec()), (2, b"p2".to_vec())];
    assert_eq!(store.deliveries("uid-1").unwrap(), expected);
    store.delete_deliveries("uid-1").unwrap();
    assert_eq!(store.deliveries("uid-1").unwrap(), vec![]);
    assert_eq!(store.deliveries("uid-10").unwrap(), vec![(0, b"other".to_vec())], "a prefix is not an uid");

    assert!(store.delete_destination("acme", "hook").unwrap());
    assert!(!store.delete_destination("acme", "hook").unwrap());
    assert_eq!(store.destination("acme", "hook").unwrap(), None);
    assert!(store.create_destination("acme", "hook", b"v3").unwrap(), "a deleted id can be used again");
}

#[test]
fn the_embedded_store_keeps_destinations_and_deliveries() {
    conforms(&EmbeddedStore::in_memory().unwrap());
}

#[test]
fn the_embedded_store_keeps_them_across_a_reopen() {
    let dir = std::env::temp_dir().join(format!("tally-sinks-{}", std::process::id()));
    let path = dir.join("tally.redb");
    {
        let store = EmbeddedStore::open(&path).unwrap();
        assert!(store.create_destination("acme", "hook", b"v1").unwrap());
        store.put_delivery("uid", 1, b"at 7").unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.destinations().unwrap(), vec![b"v1".to_vec()]);
    assert_eq!(store.deliveries("uid").unwrap(), vec![(1, b"at 7".to_vec())]);
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_scylla_store_keeps_destinations_and_deliveries() {
    scylla_env::with_scylla("the_scylla_store_keeps_destinations_and_deliveries", |store| conforms(store));
}
