//! Ethernet II frames and their 802.1Q / 802.1ad (QinQ) tags.

use flowgate_config::appliance::MacAddr;

use super::{Field, WireError};

/// The EtherTypes the dataplane tells apart.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    /// An 802.1Q tag (customer VLAN).
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    /// An 802.1ad tag (service VLAN, the outer tag of QinQ).
    pub const QINQ: u16 = 0x88a8;

    /// Whether an EtherType announces a VLAN tag.
    #[inline]
    pub fn is_vlan(ethertype: u16) -> bool {
        ethertype == VLAN || ethertype == QINQ
    }
}

/// Byte ranges of the Ethernet header.
pub mod field {
    use crate::wire::{Field, Rest};
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
    /// The header's length.
    pub const HEADER_LEN: usize = PAYLOAD.start;
}

/// The broadcast address.
pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

/// An Ethernet II frame over a byte buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view without a length check: the accessors panic on a buffer shorter than 14 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// A view of a buffer holding at least the 14-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::HEADER_LEN {
            return Err(WireError::truncated("ethernet", field::HEADER_LEN, len));
        }
        Ok(EthernetFrame { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(mac_at(self.buffer.as_ref(), field::DESTINATION))
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr(mac_at(self.buffer.as_ref(), field::SOURCE))
    }

    /// The EtherType of the payload (or a VLAN tag's, [`ethertype::is_vlan`]).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        super::get_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        super::set_u16(self.buffer.as_mut(), field::ETHERTYPE.start, ethertype);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[inline]
fn mac_at(b: &[u8], f: Field) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[f]);
    m
}

/// Byte ranges of a VLAN tag: the 4 bytes that follow an EtherType of 0x8100 or 0x88a8.
pub mod vlan_field {
    use crate::wire::Field;
    /// Tag control information: priority (3 bits), drop eligible (1), VLAN id (12).
    pub const TCI: Field = 0..2;
    /// The EtherType of what follows the tag.
    pub const ETHERTYPE: Field = 2..4;
    pub const TAG_LEN: usize = ETHERTYPE.end;
}

/// An 802.1Q or 802.1ad tag (after the EtherType that announced it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> VlanTag<T> {
        VlanTag { buffer }
    }

    /// A view of a buffer holding at least the 4-byte tag.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<VlanTag<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < vlan_field::TAG_LEN {
            return Err(WireError::truncated("vlan tag", vlan_field::TAG_LEN, len));
        }
        Ok(VlanTag { buffer })
    }

    #[inline]
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[vlan_field::TCI.start] >> 5
    }

    #[inline]
    pub fn drop_eligible(&self) -> bool {
        self.buffer.as_ref()[vlan_field::TCI.start] & 0x10 != 0
    }

    #[inline]
    pub fn vlan_id(&self) -> u16 {
        super::get_u16(self.buffer.as_ref(), vlan_field::TCI.start) & 0x0fff
    }

    /// The EtherType of what follows the tag (another tag, IPv4, ...).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        super::get_u16(self.buffer.as_ref(), vlan_field::ETHERTYPE.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Priority 0, not drop eligible, VLAN `id` (12 bits).
    #[inline]
    pub fn set_vlan_id(&mut self, id: u16) {
        super::set_u16(self.buffer.as_mut(), vlan_field::TCI.start, id & 0x0fff);
    }

    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        super::set_u16(self.buffer.as_mut(), vlan_field::ETHERTYPE.start, ethertype);
    }
}

/// Where a frame's network header starts once its VLAN tags (at most `max_tags`) are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L3Start {
    /// The EtherType of the network header.
    pub ethertype: u16,
    /// Its offset in the frame.
    pub offset: usize,
    /// VLAN tags walked.
    pub tags: u8,
}

/// Why [`l3_start`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagError {
    /// The Ethernet header or a tag is cut short.
    Truncated,
    /// More tags than allowed.
    TooManyTags,
}

/// Walks the Ethernet header and up to `max_tags` VLAN tags of `frame`.
#[inline]
pub fn l3_start(frame: &[u8], max_tags: usize) -> Result<L3Start, TagError> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| TagError::Truncated)?;
    let mut ethertype = eth.ethertype();
    let mut offset = field::HEADER_LEN;
    let mut tags = 0u8;
    while ethertype::is_vlan(ethertype) {
        if usize::from(tags) == max_tags {
            return Err(TagError::TooManyTags);
        }
        let tag = frame
            .get(offset..)
            .and_then(|b| VlanTag::new_checked(b).ok())
            .ok_or(TagError::Truncated)?;
        ethertype = tag.ethertype();
        offset += vlan_field::TAG_LEN;
        tags += 1;
    }
    Ok(L3Start {
        ethertype,
        offset,
        tags,
    })
}

/// Sets the EtherType that announces the network header at `l3` in `frame`: the frame's own,
/// or its last VLAN tag's (the two bytes in front of the header, in both cases).
#[inline]
pub fn set_network_ethertype(frame: &mut [u8], l3: usize, ethertype: u16) -> Result<(), WireError> {
    if l3 < field::HEADER_LEN || l3 > frame.len() {
        return Err(WireError::truncated(
            "ethernet",
            field::HEADER_LEN,
            l3.min(frame.len()),
        ));
    }
    super::set_u16(frame, l3 - 2, ethertype);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // dst 02:00:00:00:00:02, src 02:00:00:00:00:01, 802.1ad tag vid 7, 802.1Q pcp 5 vid 100,
    // IPv4
    const FRAME: [u8; 22] = [
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0xa0, 0x64, 0x08,
        0x00,
    ];

    #[test]
    fn getters_read_the_bytes() {
        let f = EthernetFrame::new_checked(&FRAME[..]).expect("14 bytes");
        assert_eq!(f.dst_addr(), MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(f.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), ethertype::QINQ);
        let outer = VlanTag::new_checked(f.payload()).expect("tag");
        assert_eq!((outer.vlan_id(), outer.ethertype()), (7, ethertype::VLAN));
        let inner = VlanTag::new_checked(&f.payload()[4..]).expect("tag");
        assert_eq!(
            (inner.priority(), inner.drop_eligible(), inner.vlan_id()),
            (5, false, 100)
        );
        assert_eq!(
            l3_start(&FRAME, 2),
            Ok(L3Start {
                ethertype: ethertype::IPV4,
                offset: 22,
                tags: 2
            })
        );
        assert_eq!(l3_start(&FRAME, 1), Err(TagError::TooManyTags));
        assert_eq!(l3_start(&FRAME[..21], 2), Err(TagError::Truncated));
    }

    #[test]
    fn setters_write_the_bytes() {
        let mut buf = [0u8; 18];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).expect("14 bytes");
        f.set_dst_addr(MacAddr([2, 0, 0, 0, 0, 2]));
        f.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        f.set_ethertype(ethertype::VLAN);
        let mut tag = VlanTag::new_checked(f.payload_mut()).expect("tag");
        tag.set_vlan_id(0xf064);
        tag.set_ethertype(ethertype::IPV4);
        assert_eq!(
            buf,
            [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00]
        );
    }

    #[test]
    fn short_buffers_are_refused() {
        for n in 0..14 {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME[..n]),
                Err(WireError::truncated("ethernet", 14, n))
            );
        }
        assert!(VlanTag::new_checked(&FRAME[..3]).is_err());
    }

    #[test]
    fn the_network_ethertype_is_the_frames_or_the_last_tags() {
        let mut f = FRAME;
        set_network_ethertype(&mut f, 22, ethertype::IPV6).expect("tagged");
        assert_eq!(&f[20..22], &[0x86, 0xdd]);
        assert_eq!(&f[12..14], &[0x88, 0xa8], "the outer tag is kept");
        set_network_ethertype(&mut f, 14, ethertype::ARP).expect("untagged");
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert!(set_network_ethertype(&mut f, 13, ethertype::ARP).is_err());
        assert!(set_network_ethertype(&mut f, 23, ethertype::ARP).is_err());
    }
}
