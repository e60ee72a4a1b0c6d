//! Lists whose filters apply after rows are read (documents by field, events by kind or time):
//! read on, page after page, until enough rows are kept, enough are read, or the list ends.
//! The next read goes on after the last row read, kept or not, so nothing is read twice.

use tally_store::StoreError;
use tally_store::reads::Page;

/// What a filtered read found.
pub(crate) struct Filtered<O, C> {
    pub items: Vec<O>,
    /// Where the next read starts: after the last row read (the start, when none was).
    pub last: Option<C>,
    /// Whether the list may go on after `last` (else it ended there, for now).
    pub more: bool,
}

/// Reads pages with `read` from `after` on, and keeps what `keep` makes of each row, until
/// `limit` rows are kept, `scan_max` are read, or the list ends.
pub(crate) fn filtered<I, C, O>(
    mut after: Option<C>,
    (limit, scan_max): (usize, usize),
    mut read: impl FnMut(Option<&C>) -> Result<Page<I, C>, StoreError>,
    place: impl Fn(&I) -> C,
    mut keep: impl FnMut(I) -> Result<Option<O>, StoreError>,
) -> Result<Filtered<O, C>, StoreError> {
    let (mut items, mut scanned) = (Vec::new(), 0);
    loop {
        let page = read(after.as_ref())?;
        for row in page.items {
            scanned += 1;
            after = Some(place(&row));
            items.extend(keep(row)?);
            if items.len() == limit || scanned == scan_max {
                return Ok(Filtered { items, last: after, more: true });
            }
        }
        if page.next.is_none() {
            return Ok(Filtered { items, last: after, more: false });
        }
    }
}
