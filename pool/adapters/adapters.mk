# pool/adapters/adapters.mk - the optional adapters, included by the top
# Makefile. Each is a small library of its own on top of libcpool, built
# from pool/adapters/NAME.c with its header include/cpool_NAME.h:
#
#   tls    libcpool_tls    OpenSSL (libssl-dev): TLS on the pooled fd
#   redis  libcpool_redis  hiredis (libhiredis-dev): a redisContext per conn
#   pq     libcpool_pq     libpq (libpq-dev): PostgreSQL through ops->dial
#
# libcpool itself depends on none of them. `make adapters` builds those
# whose dependency's header is installed (archive, .so, .pc); `make install`
# installs them beside libcpool.

ADAPTER_tls_DEP := /usr/include/openssl/ssl.h
ADAPTER_tls_LIBS := -lssl -lcrypto
ADAPTER_tls_REQ := libssl libcrypto
ADAPTER_tls_CFLAGS :=
ADAPTER_redis_DEP := /usr/include/hiredis/hiredis.h
ADAPTER_redis_LIBS := -lhiredis
ADAPTER_redis_REQ := hiredis
ADAPTER_redis_CFLAGS :=
ADAPTER_pq_DEP := /usr/include/postgresql/libpq-fe.h
ADAPTER_pq_LIBS := -lpq
ADAPTER_pq_REQ := libpq
ADAPTER_pq_CFLAGS := -I/usr/include/postgresql

# The adapters with a source here and their dependency installed.
ADAPTERS := $(foreach a,$(patsubst pool/adapters/%.c,%,$(wildcard pool/adapters/*.c)),\
	$(if $(wildcard $(ADAPTER_$(a)_DEP)),$(a)))
ADAPTER_ARCHIVES := $(ADAPTERS:%=$(BUILD)/libcpool_%.a)
ADAPTER_SOS := $(ADAPTERS:%=$(BUILD)/libcpool_%.so)
ADAPTER_PCS := $(ADAPTERS:%=$(BUILD)/cpool_%.pc)
ADAPTER_LIBS := $(foreach a,$(ADAPTERS),$(ADAPTER_$(a)_LIBS))
ADAPTER_CFLAGS := $(foreach a,$(ADAPTERS),$(ADAPTER_$(a)_CFLAGS))

.PHONY: adapters install-adapters

adapters: $(ADAPTER_ARCHIVES) $(ADAPTER_SOS) $(ADAPTER_PCS)

$(BUILD)/pool/adapters/%.o: pool/adapters/%.c include/cpool_%.h include/cpool.h \
		pool/adapters/adapters.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PROJECT_CFLAGS) $(ADAPTER_$*_CFLAGS) -c $< -o $@

$(BUILD)/libcpool_%.a: $(BUILD)/pool/adapters/%.o
	@rm -f $@
	ar rcs $@ $<

$(BUILD)/libcpool_%.so: $(BUILD)/pool/adapters/%.o $(BUILD)/libcpool.so
	$(CC) -shared -Wl,-soname,libcpool_$*.so.$(VERSION_MAJOR) \
		$(if $(filter asan tsan,$(SAN)),,-Wl,-z,defs) $(SAN_LDFLAGS) $(LDFLAGS) \
		-o $(BUILD)/libcpool_$*.so.$(VERSION) $< -L$(BUILD) -lcpool \
		$(ADAPTER_$*_LIBS)
	ln -sf libcpool_$*.so.$(VERSION) $(BUILD)/libcpool_$*.so.$(VERSION_MAJOR)
	ln -sf libcpool_$*.so.$(VERSION_MAJOR) $@

# Requires (not .private): each header includes its library's.
$(BUILD)/cpool_%.pc: pool/adapters/adapters.mk include/cpool.h
	@mkdir -p $(BUILD)
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
		'Name: cpool_$*' 'Description: cpool adapter: $*' \
		'Version: $(VERSION)' 'Requires: cpool $(ADAPTER_$*_REQ)' \
		'Libs: -L$${libdir} -lcpool_$*' \
		'Cflags: -I$${includedir}' > $@

install-adapters: adapters
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	for a in $(ADAPTERS); do \
		install -m 644 include/cpool_$$a.h $(DESTDIR)$(INCLUDEDIR)/cpool_$$a.h; \
		install -m 644 $(BUILD)/libcpool_$$a.a $(DESTDIR)$(LIBDIR)/; \
		install -m 755 $(BUILD)/libcpool_$$a.so.$(VERSION) $(DESTDIR)$(LIBDIR)/; \
		ln -sf libcpool_$$a.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libcpool_$$a.so.$(VERSION_MAJOR); \
		ln -sf libcpool_$$a.so.$(VERSION_MAJOR) $(DESTDIR)$(LIBDIR)/libcpool_$$a.so; \
		install -m 644 $(BUILD)/cpool_$$a.pc $(DESTDIR)$(PKGCONFIGDIR)/; \
	done
