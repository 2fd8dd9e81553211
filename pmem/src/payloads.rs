//! A batch's encoded payloads, back to back in one buffer the log keeps between batches: staging
//! a batch encodes every value before it stages any (whole or not at all), and a fresh buffer per
//! value cost an allocation or more per client request on the persistence thread.

use decree_engine::types::Value;

/// Buffer capacity kept between batches. Ordinary batches stay well below it (a value is at most
/// the leader's `max_batch_bytes`, 1 MiB by default); a rare larger batch gives the rest back.
pub const RETAINED_BYTES: usize = 4 << 20;

/// Payload count whose end offsets are kept between batches (8 bytes each).
pub const RETAINED_PAYLOADS: usize = 1 << 14;

/// Encoded payloads of one batch, in order.
#[derive(Debug, Default)]
pub struct Payloads {
    /// Every payload's bytes, back to back.
    bytes: Vec<u8>,
    /// Where each payload ends in `bytes`; it starts where the previous one ends.
    ends: Vec<usize>,
}

impl Payloads {
    /// Replaces the contents with `values` encoded by `encode_value`, which appends one value's
    /// bytes to the buffer it is given (leaving the bytes already there alone).
    pub fn fill<'a>(
        &mut self,
        values: impl Iterator<Item = &'a Value>,
        encode_value: &mut dyn FnMut(&Value, &mut Vec<u8>),
    ) {
        self.bytes.clear();
        self.ends.clear();
        // An encoder that replaced the buffer (`*out = to_vec(..)`) would silently corrupt the
        // payloads before it: debug builds (the tests) keep a running crc of what each value
        // appended and check the whole buffer against it once (linear, not per prefix).
        #[cfg(debug_assertions)]
        let mut appended = 0u32;
        for value in values {
            let start = self.bytes.len();
            encode_value(value, &mut self.bytes);
            assert!(self.bytes.len() >= start, "contract violated: payloads-encode-only-appends");
            #[cfg(debug_assertions)]
            {
                appended = crc32c::crc32c_append(appended, &self.bytes[start..]);
            }
            self.ends.push(self.bytes.len());
        }
        #[cfg(debug_assertions)]
        assert_eq!(appended, crc32c::crc32c(&self.bytes), "contract violated: payloads-encode-only-appends");
    }

    /// The payloads in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + Clone + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.bytes[start..end])
    }

    /// Empties the batch, keeping at most the retained capacity for the next one.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.bytes.shrink_to(RETAINED_BYTES);
        self.ends.shrink_to(RETAINED_PAYLOADS);
    }

    /// Bytes the buffer can hold without growing.
    pub fn capacity_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_engine::types::Value;

    fn encode(value: &Value, out: &mut Vec<u8>) {
        out.extend(std::iter::repeat_n(7, 100 * value.request_count() + 3));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "payloads-encode-only-appends")]
    fn an_encoder_that_rewrites_earlier_payloads_is_a_broken_contract() {
        let mut payloads = Payloads::default();
        let mut replace = |_: &Value, out: &mut Vec<u8>| *out = vec![out.len() as u8 + 1; out.len() + 1];
        payloads.fill([Value::Noop, Value::Noop].iter(), &mut replace);
    }

    #[test]
    fn payloads_come_back_in_order_and_in_full() {
        let mut payloads = Payloads::default();
        let mut tagged = 0u8;
        let mut encode_tagged = |_: &Value, out: &mut Vec<u8>| {
            tagged += 1;
            out.extend(std::iter::repeat_n(tagged, tagged as usize - 1));
        };
        payloads.fill([Value::Noop, Value::Noop, Value::Noop].iter(), &mut encode_tagged);
        let got: Vec<&[u8]> = payloads.iter().collect();
        assert_eq!(got, vec![&[][..], &[2][..], &[3, 3][..]], "an empty payload keeps its place");
    }

    #[test]
    fn a_second_batch_reuses_the_buffer() {
        let mut payloads = Payloads::default();
        let batch = vec![Value::Noop; 64];
        payloads.fill(batch.iter(), &mut encode);
        let (bytes, ends) = (payloads.bytes.as_ptr(), payloads.ends.as_ptr());
        payloads.clear();
        payloads.fill(batch.iter(), &mut encode);
        assert_eq!(
            (payloads.bytes.as_ptr(), payloads.ends.as_ptr()),
            (bytes, ends),
            "no new buffer for a batch that fits"
        );
        assert_eq!(payloads.iter().count(), 64);
    }

    #[test]
    fn a_huge_batch_does_not_pin_its_buffer() {
        let mut payloads = Payloads::default();
        let mut encode_huge = |_: &Value, out: &mut Vec<u8>| out.resize(out.len() + (1 << 20), 1);
        payloads.fill(vec![Value::Noop; 8].iter(), &mut encode_huge);
        assert!(payloads.capacity_bytes() >= 8 << 20);
        payloads.clear();
        assert!(payloads.capacity_bytes() <= RETAINED_BYTES, "capacity {} kept", payloads.capacity_bytes());
        assert!(payloads.ends.capacity() <= RETAINED_PAYLOADS);
    }

    #[test]
    #[should_panic(expected = "payloads-encode-only-appends")]
    fn an_encoder_that_replaces_the_buffer_is_refused() {
        let mut payloads = Payloads::default();
        let mut calls = 0;
        let mut encode_fresh = |_: &Value, out: &mut Vec<u8>| {
            calls += 1;
            *out = vec![1; if calls == 1 { 10 } else { 2 }];
        };
        payloads.fill([Value::Noop, Value::Noop].iter(), &mut encode_fresh);
    }
}
