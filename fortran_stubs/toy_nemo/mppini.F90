MODULE mppini
   !!======================================================================
   !!                       ***  MODULE  mppini  ***
   !! toy_nemo :  domain decomposition jpni x jpnj read from &nammpp
   !!======================================================================
   !!   mpp_init    : read &nammpp, choose or check the split, local sizes, neighbours
   !!   mpp_box     : first global index and size of the subdomain of any rank
   !!----------------------------------------------------------------------
   !! Local arrays are (jpi, jpj, jpk): ji = 1 and ji = jpi are halo points,
   !! ji = 2 .. jpi-1 are the points this rank owns; global index
   !! ig = nimpp + ji - 2 (same in j). Outside the global grid the halo is
   !! land (zero): the global grid already holds the 1-point land rim.
   !!
   !! State owned here (written by mpp_init only):
   !!   jpni, jpnj, jpi, jpj, nimpp, njmpp, nowe, noea, noso, nono, nldi...
   !!----------------------------------------------------------------------
   USE mpi_f08 , ONLY : MPI_PROC_NULL
   USE par_kind, ONLY : lc
   USE lib_mpp , ONLY : nproc, jpnij, lwp, numout, ctl_stop, ctl_nam, nam_open

   IMPLICIT NONE
   PRIVATE

   PUBLIC   mpp_init   ! called by nemogcm
   PUBLIC   mpp_box    ! called by iom (gather) and rst (read)

   INTEGER, PUBLIC ::   jpni = 0, jpnj = 0   !: number of subdomains in i and j (&nammpp)
   INTEGER, PUBLIC ::   jpiglo, jpjglo       !: global T points, land rim included
   INTEGER, PUBLIC ::   jpi, jpj             !: local sizes, 1-point halo on each side included
   INTEGER, PUBLIC ::   nimpp, njmpp         !: global index of the first point this rank owns
   INTEGER, PUBLIC ::   nowe, noea, noso, nono   !: neighbour ranks (MPI_PROC_NULL at the edge)
   INTEGER, PUBLIC ::   jperio = 0           !: 0 closed; 4, 6 cyclic east-west + north fold (T, F pivot)

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE mpp_init( kpiglo, kpjglo, kperio )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE mpp_init  ***
      !! ** Purpose :   split the global grid over the jpnij ranks
      !!
      !! ** Method  :   jpni = jpnj = 0: every factorisation jpni*jpnj = jpnij is tried and
      !!                the one with the smallest subdomain perimeter kept (near-square
      !!                subdomains, as NEMO's mpp_init). Otherwise jpni*jpnj must equal
      !!                the number of ranks. Sizes that do not divide the grid are
      !!                spread one point at a time over the first subdomains.
      !!------------------------------------------------------------------
      INTEGER, INTENT(in) ::   kpiglo, kpjglo   ! global grid size
      INTEGER, INTENT(in), OPTIONAL ::   kperio   ! 0 closed (default), 4 or 6 (cyclic + north fold)
      INTEGER ::   inum, ios, ji, jj, iperim, ibest, isi, isj, iproci, iprocj
      CHARACTER(len=lc) ::   cmsg
      NAMELIST/nammpp/ jpni, jpnj
      !!------------------------------------------------------------------
      jpiglo = kpiglo
      jpjglo = kpjglo
      jperio = 0
      IF( PRESENT(kperio) )   jperio = kperio
      cmsg = ''
      CALL nam_open( 'namelist_ref', inum )
      READ( inum, nammpp, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'nammpp', 'namelist_ref', inum )
      CALL nam_open( 'namelist_cfg', inum )
      READ( inum, nammpp, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'nammpp', 'namelist_cfg', inum )

      IF( jpni < 0 .OR. jpnj < 0 ) THEN
         WRITE(cmsg,'(a,i0,a,i0,a)') 'nammpp: jpni = ', jpni, ', jpnj = ', jpnj, ' must be >= 0'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      IF( jpni == 0 .AND. jpnj == 0 ) THEN
         ibest = HUGE(1)
         DO ji = 1, jpnij
            IF( MOD(jpnij, ji) /= 0 )   CYCLE
            jj = jpnij / ji
            isi = (jpiglo + ji - 1) / ji
            isj = (jpjglo + jj - 1) / jj
            iperim = isi + isj
            IF( iperim < ibest ) THEN   ! ties: fewer subdomains in i (contiguous rows)
               ibest = iperim   ;   jpni = ji   ;   jpnj = jj
            ENDIF
         END DO
      ELSEIF( jpni == 0 .OR. jpnj == 0 ) THEN
         WRITE(cmsg,'(a,i0,a,i0,a)') 'nammpp: jpni = ', jpni, ', jpnj = ', jpnj,   &
            &                        ': give both, or both = 0 for an automatic split'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      IF( jpni * jpnj /= jpnij ) THEN
         WRITE(cmsg,'(a,i0,a,i0,a,i0,a,i0)') 'nammpp: jpni*jpnj = ', jpni, '*', jpnj, ' = ', jpni*jpnj,   &
            &                               ' differs from the number of MPI ranks ', jpnij
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      IF( jpni > jpiglo - 2 ) THEN
         WRITE(cmsg,'(a,i0,a,i0,a)') 'nammpp: jpni = ', jpni, ' ranks in i, more than the ', jpiglo - 2,   &
            &                        ' ocean columns in i (nn_nx - 2)'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      IF( jpnj > jpjglo - 2 ) THEN
         WRITE(cmsg,'(a,i0,a,i0,a)') 'nammpp: jpnj = ', jpnj, ' ranks in j, more than the ', jpjglo - 2,   &
            &                        ' ocean rows in j (nn_ny - 2)'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF

      iproci = MOD( nproc, jpni )
      iprocj = nproc / jpni
      CALL mpp_box( nproc, nimpp, njmpp, isi, isj )
      jpi = isi + 2
      jpj = isj + 2
      nowe = MPI_PROC_NULL   ;   noea = MPI_PROC_NULL
      noso = MPI_PROC_NULL   ;   nono = MPI_PROC_NULL
      IF( iproci > 0        )   nowe = nproc - 1
      IF( iproci < jpni - 1 )   noea = nproc + 1
      IF( jperio /= 0 .AND. iproci == 0        )   nowe = nproc + jpni - 1   ! cyclic east-west
      IF( jperio /= 0 .AND. iproci == jpni - 1 )   noea = nproc - jpni + 1
      IF( iprocj > 0        )   noso = nproc - jpni
      IF( iprocj < jpnj - 1 )   nono = nproc + jpni

      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'mpp_init : domain decomposition (&nammpp)'
         WRITE(numout,*) '~~~~~~~~'
         WRITE(numout,'(a,i5,a,i5)') '   jpni x jpnj = ', jpni, ' x ', jpnj
         WRITE(numout,'(a,i5,a,i5)') '   rank 0 local size (halo incl.) jpi x jpj = ', jpi, ' x ', jpj
      ENDIF
   END SUBROUTINE mpp_init


   SUBROUTINE mpp_box( krank, kimpp, kjmpp, kowni, kownj )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE mpp_box  ***
      !! ** Purpose :   first global index and number of owned points of any rank
      !!------------------------------------------------------------------
      INTEGER, INTENT(in ) ::   krank          ! rank (0-based)
      INTEGER, INTENT(out) ::   kimpp, kjmpp   ! global index of the first owned point
      INTEGER, INTENT(out) ::   kowni, kownj   ! number of owned points in i, j
      !!------------------------------------------------------------------
      CALL split( jpiglo, jpni, MOD(krank, jpni), kimpp, kowni )
      CALL split( jpjglo, jpnj, krank / jpni    , kjmpp, kownj )
   END SUBROUTINE mpp_box


   SUBROUTINE split( kglo, kn, kidx, kstart, klen )
      INTEGER, INTENT(in ) ::   kglo, kn, kidx   ! global size, number of pieces, piece (0-based)
      INTEGER, INTENT(out) ::   kstart, klen     ! first global index, length
      INTEGER ::   ibase, irest
      ibase = kglo / kn
      irest = MOD( kglo, kn )
      klen = ibase
      IF( kidx < irest )   klen = ibase + 1
      kstart = 1 + kidx * ibase + MIN( kidx, irest )
   END SUBROUTINE split

   !!======================================================================
END MODULE mppini
